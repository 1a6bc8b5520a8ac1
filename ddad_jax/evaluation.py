"""Accuracy of a classifier on a real (test) split, in inference mode.

The split is padded, stacked into ``(num_batches, batch, ...)`` arrays and placed on the
devices once (``EvalSet.build``), the batch axis sharded over the run's mesh. ``evaluate``
is then one jitted program: on each device a ``lax.map`` over the batches counts that
device's correct predictions, and the per-device counts are added on the host.

Why one program and no collective: dispatching one sharded program per batch made every
batch's sum a cross-device all-reduce. With small batches (``eval_batch_size=8``) hundreds
of them were queued at once, and on a CPU host split into several XLA devices
(``--xla_force_host_platform_device_count``) the few threads could not bring all of one
all-reduce's participants together in time: XLA:CPU's collective rendezvous timed out and
aborted the process. Here the devices never wait for each other, whatever the batch size.
It also keeps evaluation free of per-batch dispatch and host syncs.
"""

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ddad_jax import data, parallel
from ddad_jax.errors import UserError

# (num_batches, batch, ...): every batch split over the devices, all batches on each device.
_BATCHES_SHARDED = P(None, parallel.BATCH_AXIS)


@dataclasses.dataclass(frozen=True)
class EvalSet:
    images: jax.Array  # (num_batches, batch_size, H, W, C), uint8 as stored
    labels: jax.Array  # (num_batches, batch_size) int32; padded rows have label -1
    num_examples: int  # real (unpadded) examples
    spec: data.DatasetSpec
    mesh: Optional[Mesh] = None

    @property
    def batch_size(self) -> int:
        return self.labels.shape[1]

    @classmethod
    def build(cls, images: np.ndarray, labels: np.ndarray, spec: data.DatasetSpec,
              batch_size: int = 1000, mesh: Optional[Mesh] = None) -> "EvalSet":
        """The split, padded to whole batches, on the devices (sharded over ``mesh`` if any).

        ``batch_size`` (>= 1) is capped at the number of examples -- a larger one would only
        add padding -- and, with ``mesh``, rounded up to a multiple of its device count.

        With several processes each passes its own shard of the split (``data.load_split``):
        every batch takes an equal part from each process's shard, all shards padded to the
        longest, so every process builds the same global shape; ``num_examples`` counts all.
        """
        n = len(images)
        if batch_size < 1:
            raise UserError(f"eval_batch_size must be >= 1, got {batch_size}")
        if len(labels) != n:
            raise UserError(f"cannot evaluate on {n} images with {len(labels)} labels")
        counts = _process_counts(n, mesh)  # every process's number of examples
        total = int(sum(counts))
        if total == 0:
            raise UserError(f"cannot evaluate on {n} images with {len(labels)} labels")
        batch_size = min(batch_size, total)
        if mesh is not None:
            batch_size = -(-batch_size // mesh.size) * mesh.size
        local_batch = batch_size // len(counts)
        num_batches = -(-max(counts) // local_batch)
        # One compiled shape: padded rows get label -1 and never count as correct.
        x = np.zeros((num_batches * local_batch,) + images.shape[1:], images.dtype)
        y = np.full((num_batches * local_batch,), -1, np.int32)
        x[:n], y[:n] = images, labels
        x = x.reshape((num_batches, local_batch) + images.shape[1:])
        y = y.reshape(num_batches, local_batch)
        if mesh is None:
            x, y = jax.device_put(x), jax.device_put(y)
        elif len(counts) == 1:
            sharding = NamedSharding(mesh, _BATCHES_SHARDED)
            x, y = jax.device_put(x, sharding), jax.device_put(y, sharding)
        else:  # each process's rows of every batch
            sharding = NamedSharding(mesh, _BATCHES_SHARDED)
            x = jax.make_array_from_process_local_data(sharding, x, (num_batches, batch_size) + images.shape[1:])
            y = jax.make_array_from_process_local_data(sharding, y, (num_batches, batch_size))
        return cls(x, y, total, spec, mesh)


def _process_counts(n: int, mesh: Optional[Mesh]) -> np.ndarray:
    """The number of examples each process holding part of ``mesh`` passes (just ``[n]``
    with one process, or without a mesh: then every process evaluates its own examples)."""
    if mesh is None or len({d.process_index for d in mesh.devices.flat}) == 1:
        return np.asarray([n])
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(np.asarray(n, np.int64))).reshape(-1)


@functools.partial(jax.jit, static_argnames=("model", "spec", "mesh"))
def _correct_counts(variables, images, labels, *, model, spec, mesh):
    """Correct predictions per device, shape (devices,) (one entry without a mesh)."""

    def count(variables, images, labels):  # this device's slice of every batch
        def batch_correct(batch):
            x, y = batch
            logits = model.apply(variables, data.normalize(x, spec), train=False)
            return jnp.sum(jnp.argmax(logits, -1) == y, dtype=jnp.int32)

        return jnp.sum(jax.lax.map(batch_correct, (images, labels)))[None]

    if mesh is None:
        return count(variables, images, labels)
    # No psum: each device returns its own count, so no device ever waits on another.
    per_device = parallel.data_parallel(count, mesh, out_specs=parallel.SHARDED,
                                        in_specs=(parallel.REPLICATED, _BATCHES_SHARDED, _BATCHES_SHARDED))
    return per_device(variables, images, labels)


def evaluate(model, variables, eval_set: EvalSet) -> float:
    """Top-1 accuracy of ``model`` over every example of ``eval_set``."""
    if eval_set.mesh is not None:
        variables = parallel.replicate(variables, eval_set.mesh)
    counts = _correct_counts(variables, eval_set.images, eval_set.labels, model=model, spec=eval_set.spec,
                             mesh=eval_set.mesh)
    return int(np.sum(parallel.to_host(counts))) / eval_set.num_examples
