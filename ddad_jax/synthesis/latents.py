"""A generator's inputs: Gaussian noise for the global batch (drawn once, so results do not
depend on the device count). With target classes (a ``ce`` generator term), a class is drawn
for every image and its one-hot code is appended to the noise: the generator is
class-conditional."""

import math
from typing import Optional, Tuple

import jax
import jax.numpy as jnp


def draw_latents(rng, latent_dim: int, num_classes: int, shape,
                 balanced: bool = False) -> Tuple[jnp.ndarray, Optional[jnp.ndarray]]:
    """Generator inputs ``(*shape, latent_dim [+ num_classes])`` and the drawn classes
    (None when ``num_classes`` is 0: no targets, an unconditional generator). ``balanced``:
    every batch (the last axis of ``shape``) holds each class equally often (up to the
    remainder), in random order, instead of independent uniform draws."""
    z = jax.random.normal(rng, (*shape, latent_dim))
    if not num_classes:
        return z, None
    k = jax.random.fold_in(rng, 1)
    if balanced:
        rows, batch = math.prod(shape[:-1]), shape[-1]

        def one(key):  # the classes in turn from a random first one (the remainder falls anywhere), shuffled
            first = jax.random.randint(jax.random.fold_in(key, 1), (), 0, num_classes)
            return jax.random.permutation(key, (jnp.arange(batch) + first) % num_classes)
        targets = jax.vmap(one)(jax.random.split(k, rows)).reshape(shape)
    else:
        targets = jax.random.randint(k, shape, 0, num_classes)
    return with_classes(z, targets, num_classes), targets


def with_classes(z: jnp.ndarray, targets: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """A class-conditional generator's input: the noise ``z`` followed by one-hot ``targets``."""
    return jnp.concatenate([z, jax.nn.one_hot(targets, num_classes, dtype=z.dtype)], axis=-1)
