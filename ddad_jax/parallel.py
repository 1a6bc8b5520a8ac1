"""Data parallelism with pmap semantics: per-replica code with a named ``batch`` axis,
written as ``jax.jit`` + ``jax.shard_map`` over a one-axis device mesh.

Inside a replica, ``jax.lax.pmean(x, BATCH_AXIS)`` reduces over the global batch and
BatchNorm layers built with ``bn_axis_name=BATCH_AXIS`` use global-batch statistics.
Losses are pmean'd before differentiation, so gradients are those of the global loss.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ddad_jax.errors import UserError

BATCH_AXIS = "batch"
REPLICATED = P()
SHARDED = P(BATCH_AXIS)


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise UserError(f"asked for {num_devices} devices but only {len(devices)} are visible")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "batch_size") -> int:
    """Returns the per-device batch, or a clear error if it does not divide evenly."""
    n = mesh.size
    if global_batch <= 0 or global_batch % n:
        raise UserError(f"{what}={global_batch} is not divisible by the {n} devices in use; "
                        f"pick a multiple of {n}")
    return global_batch // n


def data_parallel(fn, mesh: Mesh, in_specs, out_specs):
    """Per-replica ``fn`` over ``mesh`` (call it inside ``jax.jit``)."""
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


def gather_replicated(x, axis_name: str = BATCH_AXIS):
    """Per-replica code: the replicas' ``x`` (n, ...) stacked in replica order, (replicas * n,
    ...), as one value known to be the same on every replica (an all-gather written as a psum
    of zero-padded parts, exact: adding zeros). ``jax.lax.all_gather``'s result is typed as
    varying across replicas, so it could not leave a ``shard_map`` as a replicated value."""
    n, size = x.shape[0], jax.lax.psum(1, axis_name)
    parts = jnp.zeros((n * size, *x.shape[1:]), x.dtype)
    parts = jax.lax.dynamic_update_slice_in_dim(parts, x, jax.lax.axis_index(axis_name) * n, axis=0)
    return jax.lax.psum(parts, axis_name)


def shard_batch(x, mesh: Mesh):
    """Places a host array (global batch first) split along the batch axis."""
    return jax.device_put(x, NamedSharding(mesh, SHARDED))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, REPLICATED))
