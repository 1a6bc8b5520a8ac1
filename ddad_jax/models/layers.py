"""Plain Flax layer helpers shared by the model definitions.

The models take their convolution (and, where they have one, their pooling and fused
upsampling convolution) as module fields, so a backend can swap in faster
implementations with the same parameters (``ddad_jax/backends``); these are the plain ones.
"""

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

ModuleDef = Any

FEATURES = "features"  # the collection models sow their intermediate features into


def sow_feature(module: nn.Module, name: str, x: jnp.ndarray) -> None:
    """Records ``x`` as feature ``name`` when the ``features`` collection is mutable (a no-op
    otherwise, so plain ``apply`` calls pay nothing). Classifiers sow ``attention1..n`` (each
    stage's output, for attention maps) and ``penultimate`` (what enters the last Dense layer,
    the classifier named by the model's ``head`` attribute)."""
    if not module.is_initializing():  # init makes every collection mutable: keep features out of variables
        module.sow(FEATURES, name, x, reduce_fn=lambda _, v: v, init_fn=lambda: None)


def batch_norm(train: bool, axis_name: Optional[str] = None, **kwargs) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5).

    ``axis_name`` makes train-mode statistics global over a named (data-parallel)
    axis; in inference mode the running averages are used and no collective runs.
    """
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        axis_name=axis_name if train else None, **kwargs)


def conv3x3(conv: ModuleDef = nn.Conv) -> ModuleDef:
    """``conv`` (an ``nn.Conv``-like ModuleDef) as a bias-free 3x3 convolution with padding 1."""
    return functools.partial(conv, kernel_size=(3, 3), padding=1, use_bias=False)


def upsample2_then_conv3x3(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """Nearest-neighbour upsampling by 2, then a 3x3 'SAME' convolution (NHWC x HWIO)."""
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


class UpsampleConv(nn.Module):
    """Nearest-neighbour upsampling by 2, then a 3x3 convolution ('SAME' zero padding).

    Its parameters are those of ``conv3x3`` (``kernel`` of shape (3, 3, in, features), and
    ``bias`` when ``use_bias``) held directly, not in a submodule; ``compute(x, kernel)``
    is how the two are computed, so a backend can fuse them (``backends.cpu``) and load the
    same checkpoint."""
    features: int
    use_bias: bool = False
    dtype: Any = jnp.float32  # compute dtype; params stay float32
    compute: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray] = upsample2_then_conv3x3

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features), jnp.float32)
        y = self.compute(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32).astype(self.dtype)
        return y


def max_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """Non-overlapping ``size`` x ``size`` max pooling (NHWC, stride = size, no padding).
    ``window_shape`` by keyword: jax2onnx's stand-in for ``nn.max_pool`` (ONNX export,
    ``ddad_jax.export``) takes it only that way."""
    return nn.max_pool(x, window_shape=(size, size), strides=(size, size))
