"""DeepInversion's synthesiser: the images themselves, from Gaussian noise each round, kept
in the valid image range after every step."""

import jax.numpy as jnp
import optax

from ddad_jax.synthesis.inner import Synthesizer


def start(hp, generator, state, noise, init_rng):
    """The noise is the batch: the inner Adam moves its pixels."""
    del hp, generator, state, init_rng
    return noise, lambda p: p


def optimizer(hp) -> optax.GradientTransformation:
    return optax.adam(hp.synthesis_lr, b1=0.5, b2=0.99)  # the reference code's betas for pixels


def project(hp):
    """Clip to ``hp.pixel_bounds`` (per-channel (low, high) in normalised units), if given."""
    if hp.pixel_bounds is None:
        return lambda p: p
    low, high = (jnp.asarray(b) for b in hp.pixel_bounds)
    return lambda p: jnp.clip(p, low, high)


SYNTHESIZER = Synthesizer(noise_shape=lambda hp, image_shape: tuple(image_shape), start=start, optimizer=optimizer,
                          project=project)
