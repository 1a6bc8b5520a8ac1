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

from typing import Optional, Tuple

import flax
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ddad_jax import parallel


def draw_latents(rng, latent_dim: int, num_classes: int, shape) -> Tuple[jnp.ndarray, Optional[jnp.ndarray]]:
    """Generator inputs ``(*shape, latent_dim [+ num_classes])`` and the drawn classes
    (None when ``num_classes`` is 0: no targets, an unconditional generator)."""
    z = jax.random.normal(rng, (*shape, latent_dim))
    if not num_classes:
        return z, None
    targets = jax.random.randint(jax.random.fold_in(rng, 1), shape, 0, num_classes)
    return with_classes(z, targets, num_classes), targets


def with_classes(z: jnp.ndarray, targets: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """A class-conditional generator's input: the noise ``z`` followed by one-hot ``targets``."""
    return jnp.concatenate([z, jax.nn.one_hot(targets, num_classes, dtype=z.dtype)], axis=-1)


@flax.struct.dataclass
class Pool:
    images: jnp.ndarray  # (slots, batch, H, W, C)
    logits: jnp.ndarray  # (slots, batch, classes): the teacher's, on those images


POOL_SPEC = Pool(images=P(None, parallel.BATCH_AXIS), logits=P(None, parallel.BATCH_AXIS))


def init_pool(slots: int, batch_size: int, image_shape, num_classes: int) -> Optional[Pool]:
    """An empty pool (None when ``slots`` is 0: no pool)."""
    if not slots:
        return None
    return Pool(images=jnp.zeros((slots, batch_size, *image_shape), jnp.float32),
                logits=jnp.zeros((slots, batch_size, num_classes), jnp.float32))


def add(pool: Pool, step, images, logits) -> Pool:
    """Stores a (local) batch and its teacher logits, overwriting the oldest (per-replica code;
    ``step`` counts the batches added before this one)."""
    slot = step % pool.images.shape[0]
    return Pool(images=pool.images.at[slot].set(images.astype(pool.images.dtype)),
                logits=pool.logits.at[slot].set(logits.astype(pool.logits.dtype)))


def sample(pool: Pool, slots):
    """Pooled (images, teacher logits): example ``j`` of the local batch comes from slot
    ``slots[j]`` at the same position (per-replica code; ``slots`` is the local part)."""
    column = jnp.arange(slots.shape[0])
    return pool.images[slots, column], pool.logits[slots, column]


def draw_slots(rng, filled, num_steps: int, batch_size: int):
    """Slot indices ``(num_steps, batch_size)``, uniform over the ``filled`` slots in use."""
    return jax.random.randint(rng, (num_steps, batch_size), 0, jnp.maximum(filled, 1))
