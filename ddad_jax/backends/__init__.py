"""The seam between the models and the backend they run on.

Models are plain Flax and take the few layers that have backend-specific implementations
as module fields (flax's examples/imagenet passes ``conv`` the same way). ``Ops`` bundles
them; ``PLAIN`` is plain Flax, ``cpu.OPS`` the CPU paths of ``cpu.py`` (faster on XLA:CPU,
same functions and the same parameters). ``ops_for`` picks one for a platform, and
``models.get_classifier`` / ``models.get_generator`` use it by default, so a model built on
a CPU host gets the CPU paths and one built on a GPU or TPU host plain Flax; a checkpoint
written by either loads into the other.

Also here: ``on_cpu`` and ``scan_unroll``, for code outside the models that depends on the
backend.
"""

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddad_jax.models import layers

ModuleDef = Any


@dataclasses.dataclass(frozen=True)
class Ops:
    """The backend-specific layers a model takes as fields.

    conv: an ``nn.Conv``-like ModuleDef (same constructor and parameters).
    upsample_conv: a ModuleDef ``(features, use_bias=False, dtype=...)`` computing nearest
        upsampling by 2 then a 3x3 'SAME' convolution, with ``layers.conv3x3``'s parameters.
    max_pool: ``(x, size) -> x``, non-overlapping ``size`` x ``size`` max pooling (NHWC).
    """
    conv: ModuleDef
    upsample_conv: ModuleDef
    max_pool: Callable[[jnp.ndarray, int], jnp.ndarray]


PLAIN = Ops(conv=nn.Conv, upsample_conv=layers.UpsampleConv, max_pool=layers.max_pool)


def ops_for(platform: Optional[str] = None) -> Ops:
    """The ops for ``platform`` ('cpu', 'gpu', 'tpu'; default ``jax.default_backend()``, which
    starts JAX's backend: on a CPU host, split it into devices first, ``parallel.split_host_devices``):
    ``cpu.OPS`` on CPU, else ``PLAIN``."""
    # Imported here: cpu.py builds its OPS from Ops above.
    from ddad_jax.backends import cpu  # pylint: disable=import-outside-toplevel
    return cpu.OPS if (platform or jax.default_backend()) == "cpu" else PLAIN


def on_cpu() -> bool:
    """Whether JAX computes on the CPU backend (where some XLA paths need working around)."""
    return jax.default_backend() == "cpu"


def scan_unroll(steps: int) -> int:
    """The ``unroll`` of a ``lax.scan`` over ``steps`` steps: all of them on CPU, where XLA's
    CPU runtime ran large convolutions inside a while loop ~7x slower (CIFAR ResNet-34 ->
    ResNet-18 at batch 64: 247 s vs 35 s); 1 (a loop, compiled once) elsewhere."""
    return steps if on_cpu() else 1
