"""Layer helpers shared by the model definitions."""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.backends import cpu as conv_lib


def batch_norm(train: bool, axis_name: Optional[str] = None, **kwargs) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5).

    ``axis_name`` makes train-mode statistics global over a named (data-parallel)
    axis; in inference mode the running averages are used and no collective runs.
    """
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        axis_name=axis_name if train else None, **kwargs)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_lib.conv_general_dilated)
"""``nn.Conv`` with the CPU-friendly weight gradient of ``backends/cpu.py``; every model uses it."""

conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1, use_bias=False)


# Which of a 3x3 kernel's rows (columns) act on each of the two input rows (columns) that
# an output row (column) of phase 0 / 1 sees after nearest-neighbour upsampling by 2.
_PHASE_TAPS = ((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1))


def upsample2_conv3x3(x: jnp.ndarray, kernel: jnp.ndarray, conv=conv_lib.conv_general_dilated) -> jnp.ndarray:
    """``conv3x3(upsample2(x))`` ('SAME' zero padding, nearest-neighbour upsampling by 2)
    without building the upsampled image: each of the output's four pixel phases is a
    2x2 convolution of ``x`` with sums of the 3x3 kernel's taps, so one 2x2 convolution
    with 4x the output channels computes them all (16 instead of 36 multiply-adds per
    input pixel and channel pair, on a quarter of the pixels), and the phases are
    interleaved. The same sum as the plain form, in a different order."""
    n, h, w, _ = x.shape
    cout = kernel.shape[-1]
    taps = jnp.asarray(_PHASE_TAPS, kernel.dtype)  # (phase, 2, 3)
    phased = jnp.einsum("aup,bvq,pqio->uvioab", taps, taps, kernel)  # (2, 2, in, out, a, b)
    phased = phased.reshape((*phased.shape[:3], cout * 4))
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    z = conv(padded, phased.astype(x.dtype), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z = z.reshape((n, h + 1, w + 1, cout, 2, 2))
    rows = [jnp.stack([z[:, a:a + h, b:b + w, :, a, b] for b in (0, 1)], axis=3).reshape((n, h, 2 * w, cout))
            for a in (0, 1)]
    return jnp.stack(rows, axis=2).reshape((n, 2 * h, 2 * w, cout))


class UpsampleConv3x3(nn.Module):
    """Nearest-neighbour upsampling by 2, then a bias-free 3x3 convolution ('SAME'), as
    one cheaper computation (``upsample2_conv3x3``); parameters as ``conv3x3``'s."""
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features), jnp.float32)
        return upsample2_conv3x3(x.astype(self.dtype), kernel.astype(self.dtype))


def max_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """Non-overlapping ``size`` x ``size`` max pooling (NHWC, stride = size, no padding).
    When the image divides evenly it is a max over a reshape, whose gradient is one
    elementwise select; XLA's CPU gradient of ``reduce_window`` max goes through index
    arithmetic several times slower. Ties (equal values within a window) share the gradient
    instead of one of them taking it all."""
    n, h, w, c = x.shape
    if h % size or w % size:
        return nn.max_pool(x, (size, size), strides=(size, size))
    return jnp.max(x.reshape((n, h // size, size, w // size, size, c)), axis=(2, 4))
