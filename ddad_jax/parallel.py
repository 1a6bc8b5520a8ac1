"""Data parallelism with pmap semantics: per-replica code with a named ``batch`` axis,
written as ``jax.jit`` + ``jax.shard_map`` over a one-axis device mesh.

Inside a replica, ``jax.lax.pmean(x, BATCH_AXIS)`` reduces over the global batch and
BatchNorm layers built with ``bn_axis_name=BATCH_AXIS`` use global-batch statistics.
Losses are pmean'd before differentiation, so gradients are those of the global loss.

Several processes (hosts) form one run after ``initialize_distributed``: the mesh then holds
every process's devices, each process passes only its own part of a batch
(``shard_batch``), and values every process holds in full (parameters, a teacher) become
global arrays with ``put``/``replicate``. ``docs/multihost.md`` says how to launch one.

Process setup, before JAX starts its backend: ``split_host_devices`` (a CPU host as several
XLA devices) and ``initialize_distributed`` (joining a multi-process run).
"""

import glob
import importlib.util
import math
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ddad_jax.errors import UserError

BATCH_AXIS = "batch"
REPLICATED = P()
SHARDED = P(BATCH_AXIS)


def split_host_devices(config) -> int:
    """The device-split trick: on a CPU host, XLA runs one device's work on too few
    threads at once, and splitting the batch over several host devices runs faster
    (DDAD on Fashion-MNIST, 2 cores: 0.67 s an iteration on 1 device, 0.54 s on 4; after the
    few-channel and fused-upsampling convolutions of ``backends/cpu.py``, ~0.42 s and ~0.38 s).
    Sets ``--xla_force_host_platform_device_count`` to ``gcd(config.cpu_devices,
    batch_size)``, unless the flag is already given, and returns that count. Call it before
    JAX starts its backend (importing jax is fine; ``jax.devices()`` or a computation is too
    late). It creates CPU devices only: on a GPU or TPU host JAX still computes on the
    accelerators."""
    n = math.gcd(int(config.get("cpu_devices", 1) or 1), int(config.get("batch_size", 1)))
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if n > 1 and "xla_force_host_platform_device_count" not in xla_flags:
        os.environ["XLA_FLAGS"] = f"{xla_flags} --xla_force_host_platform_device_count={n}".strip()
    return n


def cluster_environment() -> Optional[str]:
    """The multi-process cluster this process was started in, read from its environment only
    (nothing is contacted): 'SLURM' or 'Open MPI' when they started more than one task, 'Cloud
    TPU' on a TPU VM (libtpu installed, TPU chips attached); None otherwise (a plain run)."""
    env = os.environ

    def count(name):
        try:
            return int(env.get(name, "1"))
        except ValueError:
            return 1

    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm) and count("SLURM_NTASKS") > 1:
        return "SLURM"
    if "OMPI_MCA_orte_hnp_uri" in env and count("OMPI_COMM_WORLD_SIZE") > 1:
        return "Open MPI"
    if importlib.util.find_spec("libtpu") is not None and (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
        return "Cloud TPU"
    return None


def initialize_distributed(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> bool:
    """Joins this process to a multi-process run with ``jax.distributed.initialize``, before
    anything starts JAX's backend; returns whether it did.

    Explicit settings (a coordinator ``HOST:PORT`` that process 0 listens on, the number of
    processes, this one's id) are passed on as they are; a setting left out is auto-detected
    by JAX where the cluster provides it. Without any, JAX's auto-detection runs only when
    ``cluster_environment`` finds a cluster (a TPU VM, SLURM or Open MPI with several tasks),
    so a plain single-process run contacts nothing. ``num_processes=1`` forces a
    single-process run, e.g. one ``python`` inside a SLURM job of several tasks."""
    if num_processes == 1:
        return False
    explicit = coordinator_address is not None or num_processes is not None or process_id is not None
    cluster = cluster_environment()
    if not explicit and cluster is None:
        return False
    # Collectives between CPU devices of different processes need an implementation (gloo is
    # jax 0.10's default; older versions had none).
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    except Exception as e:  # pylint: disable=broad-except
        # a single TPU VM joins nothing; JAX's TPU runtime still forms a pod slice by itself
        if cluster == "Cloud TPU" and not explicit:
            print(f"warning: jax.distributed.initialize() failed on this TPU VM "
                  f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); running without it",
                  flush=True)
            return False
        where = f"the coordinator {coordinator_address}" if coordinator_address else f"the {cluster or 'cluster'} run"
        if process_id is not None or num_processes is not None:
            where += f" as process {process_id} of {num_processes}"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot join {where} ({first}); every process needs the same --coordinator_address "
                        "and --num_processes and its own --process_id (docs/multihost.md)") from None
    return True


def is_primary() -> bool:
    """Whether this process writes what only one process should (summaries, metrics, images)."""
    return jax.process_index() == 0


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
    """A one-axis ``batch`` mesh over all devices of all processes, or ``num_devices`` of them:
    with several processes, the same number from each (every process must hold part of it)."""
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise UserError(f"asked for {num_devices} devices but only {len(devices)} are visible")
        processes = jax.process_count()
        if processes > 1:
            if num_devices % processes:
                raise UserError(f"num_devices={num_devices} is not divisible by the {processes} processes; "
                                f"use a multiple of {processes} (or 0 = all devices)")
            per = num_devices // processes
            devices = [d for p in range(processes) for d in [d for d in devices if d.process_index == p][:per]]
        else:
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
    """The global batch, split along the batch axis, from this process's part of it ``x``
    (batch first): with one process the whole batch; with several, each passes the rows its
    devices hold (``len(x)`` = global batch / processes), in the order of its devices."""
    sharding = NamedSharding(mesh, SHARDED)
    processes = len({d.process_index for d in mesh.devices.flat})
    if processes == 1:
        return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x),
                                                  (x.shape[0] * processes, *x.shape[1:]))


def process_rows(global_batch: int, mesh: Mesh) -> np.ndarray:
    """The rows of a global batch of ``global_batch`` that this process's devices hold, in the
    order ``shard_batch`` expects them from it (all of them with one process): a process that
    knows the whole batch passes ``batch[process_rows(len(batch), mesh)]``."""
    index_map = NamedSharding(mesh, SHARDED).addressable_devices_indices_map((global_batch,))
    starts = sorted({index[0].indices(global_batch) for index in index_map.values()})
    return np.concatenate([np.arange(*s) for s in starts])


def _identity(x):
    return x


def _put_leaf(x, sharding: NamedSharding):
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # already global: reshard on device
        return x if x.sharding == sharding else jax.jit(_identity, out_shardings=sharding)(x)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(x)
        return jax.random.wrap_key_data(_put_leaf(jax.random.key_data(x), sharding), impl=impl)
    host = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, host, host.shape)


def put(tree, mesh: Mesh, spec: Any = REPLICATED):
    """A pytree whose full value every process holds, as global arrays on ``mesh`` laid out
    by ``spec`` (one PartitionSpec, or a tree of them shaped like ``tree``). With one process
    a ``jax.device_put``; with several, each process places its devices' parts of its own
    copy (no check that the copies agree, and no transfer between processes)."""
    if isinstance(spec, P):
        return jax.tree.map(lambda x: _put_leaf(x, NamedSharding(mesh, spec)), tree)
    return jax.tree.map(lambda s, subtree: put(subtree, mesh, s), spec, tree, is_leaf=lambda s: isinstance(s, P))


def replicate(tree, mesh: Mesh):
    """A pytree every process holds in full, replicated on every device of ``mesh``."""
    return put(tree, mesh, REPLICATED)


def to_host(tree):
    """Device values as numpy, whole: ``jax.device_get``, except that an array spread over
    several processes is gathered from all of them first (every process must call this)."""
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)


def same_on_all_processes(flag: bool) -> bool:
    """Process 0's ``flag``, on every process: a decision taken from a host measurement
    (elapsed time) that all processes must take alike, or they would wait for each other."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))
