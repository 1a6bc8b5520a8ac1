"""How synthetic images are made and kept: the generator's inputs, and the pool of past
syntheses the student samples from.

**Latents.** Gaussian noise for the global batch (drawn once, so results do not depend on
the device count). With target classes (a ``ce`` generator term), a class is drawn for every
image and its one-hot code is appended to the noise: the generator is class-conditional.

**The pool.** An adversarial generator keeps moving to where the student is currently
wrong, so the student forgets what it learnt earlier. The pool keeps the last ``slots``
synthesised batches with the frozen teacher's logits on them; with it, every student update
adds a batch sampled from the pool (the teacher is not run again on pooled images).
Layout: ``images`` ``(slots, global_batch, H, W, C)`` and ``logits`` ``(slots,
global_batch, classes)``, sharded along the batch axis (axis 1), so each replica keeps what
it synthesised; example ``i`` of a sampled batch is ``pool[s_i, i]`` with ``s_i`` drawn for
the global batch.
"""

import math
from typing import Optional, Tuple

import flax
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ddad_jax import parallel


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


@flax.struct.dataclass
class Pool:
    images: jnp.ndarray  # (slots, batch, H, W, C)
    logits: jnp.ndarray  # (slots, batch, classes): the teacher's, on those images


POOL_SPEC = Pool(images=P(None, parallel.BATCH_AXIS), logits=P(None, parallel.BATCH_AXIS))


def init_pool(slots: int, batch_size: int, image_shape, num_classes: int, pixels: bool = False) -> Optional[Pool]:
    """An empty pool (None when ``slots`` is 0: no pool). ``pixels``: images kept as 8-bit
    pixels, a quarter of the memory and checkpoint size -- what the reference code bases'
    pools of PNG files keep; ``add``/``sample`` then need the dataset's normalisation."""
    if not slots:
        return None
    return Pool(images=jnp.zeros((slots, batch_size, *image_shape), jnp.uint8 if pixels else jnp.float32),
                logits=jnp.zeros((slots, batch_size, num_classes), jnp.float32))


def to_pixels(images, normalization) -> jnp.ndarray:
    """Normalised images -> uint8 pixels (rounded, clipped to [0, 255])."""
    mean, std = (jnp.asarray(v, jnp.float32) for v in normalization)
    return jnp.clip(jnp.round((images.astype(jnp.float32) * std + mean) * 255.0), 0, 255).astype(jnp.uint8)


def from_pixels(pixels, normalization) -> jnp.ndarray:
    mean, std = (jnp.asarray(v, jnp.float32) for v in normalization)
    return (pixels.astype(jnp.float32) / 255.0 - mean) / std


def add(pool: Pool, step, images, logits, normalization=None) -> Pool:
    """Stores a (local) batch and its teacher logits, overwriting the oldest (per-replica code;
    ``step`` counts the batches added before this one). ``normalization`` (per-channel mean,
    std) for a pool of pixels."""
    slot = step % pool.images.shape[0]
    kept = to_pixels(images, normalization) if pool.images.dtype == jnp.uint8 else images.astype(pool.images.dtype)
    return Pool(images=pool.images.at[slot].set(kept), logits=pool.logits.at[slot].set(logits.astype(pool.logits.dtype)))


def sample(pool: Pool, slots, normalization=None):
    """Pooled (images, teacher logits): example ``j`` of the local batch comes from slot
    ``slots[j]`` at the same position (per-replica code; ``slots`` is the local part)."""
    column = jnp.arange(slots.shape[0])
    images = pool.images[slots, column]
    if images.dtype == jnp.uint8:
        images = from_pixels(images, normalization)
    return images, pool.logits[slots, column]


def draw_slots(rng, filled, num_steps: int, batch_size: int):
    """Slot indices ``(num_steps, batch_size)``, uniform over the ``filled`` slots in use."""
    return jax.random.randint(rng, (num_steps, batch_size), 0, jnp.maximum(filled, 1))
