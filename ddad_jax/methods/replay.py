"""A memory of past generated batches that the student replays (generative pseudo-replay).

An adversarial generator keeps moving to where the student is currently wrong, so the
student forgets the regions it learnt earlier. Keeping the last ``slots`` generated batches
together with the (frozen) teacher's logits on them, and adding a replayed batch to every
student update, counters that at the cost of one more student forward/backward per update;
the teacher is not run again on replayed images.

Layout: ``images`` is ``(slots, global_batch, H, W, C)`` and ``logits`` ``(slots,
global_batch, classes)``, sharded along the batch axis (axis 1), so each replica keeps the
images it generated. A replayed example ``i`` of the global batch is ``memory[s_i, i]`` with
``s_i`` drawn for the global batch, which keeps results independent of the device count.
"""

from typing import Optional

import flax
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ddad_jax import parallel


@flax.struct.dataclass
class Memory:
    images: jnp.ndarray  # (slots, batch, H, W, C)
    logits: jnp.ndarray  # (slots, batch, classes): the teacher's, on those images


SPEC = Memory(images=P(None, parallel.BATCH_AXIS), logits=P(None, parallel.BATCH_AXIS))


def init(slots: int, batch_size: int, image_shape, num_classes: int) -> Optional[Memory]:
    """An empty memory (None when ``slots`` is 0: replay off)."""
    if not slots:
        return None
    return Memory(images=jnp.zeros((slots, batch_size, *image_shape), jnp.float32),
                  logits=jnp.zeros((slots, batch_size, num_classes), jnp.float32))


def write(memory: Memory, slot, images, logits) -> Memory:
    """Stores a (local) batch and its teacher logits in ``slot`` (per-replica code)."""
    return Memory(images=memory.images.at[slot].set(images.astype(memory.images.dtype)),
                  logits=memory.logits.at[slot].set(logits.astype(memory.logits.dtype)))


def read(memory: Memory, slots):
    """Replayed (images, teacher logits): example ``j`` of the local batch comes from slot
    ``slots[j]`` at the same position (per-replica code; ``slots`` is the local part)."""
    column = jnp.arange(slots.shape[0])
    return memory.images[slots, column], memory.logits[slots, column]


def draw_slots(rng, filled, num_steps: int, batch_size: int):
    """Slot indices ``(num_steps, batch_size)``, uniform over the ``filled`` slots in use."""
    return jax.random.randint(rng, (num_steps, batch_size), 0, jnp.maximum(filled, 1))
