"""The DAFL/DFAD generator: latent -> linear -> BN -> (upsample, conv, BN, LeakyReLU) x2
-> conv -> tanh -> BN without affine parameters (images come out already normalised).

Each upsampling and the convolution after it are one ``upsample_conv`` module (plain:
``layers.UpsampleConv``; a backend may fuse the two, with the same parameters). Layers that
feed a BatchNorm carry no bias: BN subtracts the mean, so such a bias has an exactly zero
gradient, and an optimiser like Adam would only amplify rounding noise in it."""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.models.layers import ModuleDef, UpsampleConv, batch_norm, conv3x3


class Generator(nn.Module):
    base_channels: int = 64
    image_size: int = 32
    channels: int = 3
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32  # compute dtype (bfloat16 for mixed precision); params stay float32
    conv: ModuleDef = nn.Conv
    upsample_conv: ModuleDef = UpsampleConv  # (features, use_bias=False, dtype=...)

    @nn.compact
    def __call__(self, z: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        if self.image_size % 4:
            raise ValueError(f"generator image_size must be a multiple of 4, got {self.image_size}")
        s, c = self.image_size // 4, self.base_channels
        bn = lambda **kw: batch_norm(train, self.bn_axis_name, dtype=self.dtype, **kw)
        x = nn.Dense(2 * c * s * s, use_bias=False, dtype=self.dtype)(z).reshape((z.shape[0], s, s, 2 * c))
        x = bn()(x)
        x = self.upsample_conv(2 * c, use_bias=False, dtype=self.dtype, name="Conv_0")(x)
        x = nn.leaky_relu(bn()(x), 0.2)
        x = self.upsample_conv(c, use_bias=False, dtype=self.dtype, name="Conv_1")(x)
        x = nn.leaky_relu(bn()(x), 0.2)
        x = jnp.tanh(conv3x3(self.conv)(self.channels, use_bias=True, dtype=self.dtype, name="Conv_2")(x))
        return bn(use_bias=False, use_scale=False)(x).astype(jnp.float32)
