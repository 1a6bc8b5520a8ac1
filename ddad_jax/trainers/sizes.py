"""What a step needs, checked against what the machine has, before anything is compiled.

A config whose step cannot fit (``--config.batch_size=1000000``) would otherwise spend minutes
building and compiling giant programs before failing deep inside XLA. Here it is one
``UserError`` in seconds, with the number computed: the activations a step keeps for its
backward pass -- each network's per-image activation bytes (every submodule's output, from
shapes alone: ``jax.eval_shape``, nothing runs), twice (the activations and their gradients),
for every image a device holds -- against a device's memory limit (GPU, TPU) or, on the CPU,
the host's physical memory. It is an estimate, and a lenient one (XLA fuses some of these
buffers away and the optimiser state is left out), so only a step sure not to fit is refused.
Also left out: the batch-squared pairwise distances of the diversity diagnostics (64 MiB at a
batch of 4096), far below the activations of any batch this check lets through.
"""

import os
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ddad_jax.errors import UserError

GiB = 2 ** 30


def activation_bytes(model, input_shape: Tuple[int, ...], **call_kwargs) -> int:
    """Bytes of every submodule output of ``model`` on one input of ``input_shape`` (no batch
    axis), from shapes alone."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    _, variables = jax.eval_shape(
        lambda k, x: model.init_with_output(k, x, capture_intermediates=True, **call_kwargs), jax.random.key(0), x)
    return sum(int(np.prod(v.shape)) * v.dtype.itemsize for v in jax.tree.leaves(variables.get("intermediates", {})))


def memory_limit(mesh) -> Tuple[int, str, int]:
    """(bytes, whose, devices sharing them): one accelerator's limit, or the host's physical
    memory that all of this process's CPU devices share."""
    device = mesh.devices.flat[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"one {device.platform.upper()} device's", 1
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(host), "this host's", len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])


def check_step_memory(images_per_step: int, mesh, networks: Dict[str, Tuple[Any, Tuple[int, ...], dict]],
                      extra_bytes_per_device: int = 0, field: str = "batch_size",
                      limit: Optional[Tuple[int, str, int]] = None, passes: int = 2) -> int:
    """UserError when the activations of ``images_per_step`` images (shared over the mesh)
    through ``networks`` ({name: (model, input shape, call kwargs)}), ``passes`` times (2: the
    activations and their gradients; 1: forward only), plus ``extra_bytes_per_device`` (e.g. a
    pool of past batches), exceed the memory they get; returns the estimate per device.
    ``limit``: (bytes, whose, devices sharing them), for tests."""
    per_image = sum(activation_bytes(model, shape, **kwargs) for model, shape, kwargs in networks.values())
    per_device = -(-images_per_step // mesh.size) * passes * per_image + extra_bytes_per_device
    total_bytes, whose, sharing = limit or memory_limit(mesh)
    if per_device * sharing > total_bytes:
        names = ", ".join(networks)
        raise UserError(
            f"a step needs about {per_device * sharing / GiB:.1f} GiB ({field}={images_per_step}: "
            f"{-(-images_per_step // mesh.size)} images per device x {passes} x {per_image / 2 ** 10:.0f} KiB of activations "
            f"per image in {names}" + (f", plus {extra_bytes_per_device / GiB:.1f} GiB kept per device"
                                        if extra_bytes_per_device else "")
            + f"), more than {whose} {total_bytes / GiB:.1f} GiB of memory; lower {field}")
    return per_device


def check_eval_memory(eval_batch_size: int, num_examples: int, mesh,
                      networks: Dict[str, Tuple[Any, Tuple[int, ...], dict]],
                      limit: Optional[Tuple[int, str, int]] = None) -> int:
    """``check_step_memory`` for one evaluation chunk: the batch ``evaluation.EvalSet.build``
    makes of ``eval_batch_size`` (capped at ``num_examples``, rounded up to the device count)
    through ``networks`` in inference (forward only: one pass)."""
    batch = -(-max(1, min(eval_batch_size, num_examples)) // mesh.size) * mesh.size
    return check_step_memory(batch, mesh, networks, field="eval_batch_size", limit=limit, passes=1)


def pool_bytes_per_device(pool_size: int, batch_size: int, image_shape: Tuple[int, ...], num_classes: int,
                          devices: int) -> int:
    """A pool of ``pool_size`` past batches (images and the teacher's logits, float32), as each
    device keeps its share of every batch."""
    return pool_size * -(-batch_size // devices) * (int(np.prod(image_shape)) + num_classes) * 4


def check_int32(**counts: int) -> None:
    """UserError for a count a jitted program takes (steps, images) beyond int32."""
    for name, value in counts.items():
        if value > np.iinfo(np.int32).max:
            raise UserError(f"{name} = {value} is beyond what a step counter holds ({np.iinfo(np.int32).max}); "
                            "lower it")


__all__ = ["activation_bytes", "check_eval_memory", "check_int32", "check_step_memory", "memory_limit",
           "pool_bytes_per_device"]
