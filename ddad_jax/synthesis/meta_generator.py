"""Fast's synthesiser: each round starts from a copy of a persistent generator with fresh
latents; the persistent one learns an initialisation from which a few steps suffice
(first-order MAML: one outer Adam step per round on the sum of the inner steps' gradients)."""

from ddad_jax.synthesis import generated
from ddad_jax.synthesis.inner import Synthesizer, no_projection


def start(hp, generator, state, noise, init_rng):
    del hp, init_rng
    g = state.generator
    return generated.start_from(generator, {"params": g.params, "batch_stats": g.batch_stats}, noise)


def finish(state, inner):
    """The outer step: the persistent generator moves by the inner steps' summed gradients."""
    return state.replace(generator=state.generator.apply_gradients(grads=inner.grad_sum["generator"]))


SYNTHESIZER = Synthesizer(noise_shape=generated.noise_shape, start=start, optimizer=generated.optimizer,
                          project=no_projection, finish=finish, persistent_generator=True)
