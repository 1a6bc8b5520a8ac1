"""The pool of past syntheses the student samples from.

An adversarial generator keeps moving to where the student is currently wrong, so the student forgets what it learnt earlier. The pool keeps the last ``slots``
synthesised batches with the frozen teacher's logits on them; with it, every student update
adds a batch sampled from the pool (the teacher is not run again on pooled images).
Layout: ``images`` ``(slots, global_batch, H, W, C)`` and ``logits`` ``(slots,
global_batch, classes)``, sharded along the batch axis (axis 1), so each replica keeps what
it synthesised; example ``i`` of a sampled batch is ``pool[s_i, i]`` with ``s_i`` drawn for
the global batch.
"""

from typing import Optional

import flax
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ddad_jax import parallel


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
