"""CMI's synthesiser: a generator initialised afresh every round, optimised with its latents."""

from ddad_jax.synthesis import generated
from ddad_jax.synthesis.inner import Synthesizer, no_projection


def start(hp, generator, state, noise, init_rng):
    del hp, state
    return generated.start_from(generator, generator.clone(bn_axis_name=None).init(init_rng, noise[:1]), noise)


SYNTHESIZER = Synthesizer(noise_shape=generated.noise_shape, start=start, optimizer=generated.optimizer,
                          project=no_projection)
