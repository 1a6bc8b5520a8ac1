"""Generators: latent vectors -> normalised images of any size.

``Generator`` (``dafl``, the default): DAFL's / DFAD's generator -- latent -> linear -> BN ->
(upsample, conv, BN, LeakyReLU) per doubling -> conv -> tanh -> BN without affine parameters
(images come out already normalised). The number of doublings follows the image size
(``upsamplings``): two up to 32x32 (exactly DAFL's network there), one more each time the size
doubles (64: three, from 8x8; 128: four; 224: five, from 7x7). Each upsampling and the
convolution after it are one ``upsample_conv`` module (plain: ``layers.UpsampleConv``; a backend
may fuse the two, with the same parameters).

``LargeGenerator`` (``dfad_large``): DFAD's generator for 128x128 images (its segmentation
and Caltech101 runs): latent -> linear to 8c x S/16 x S/16 -> BN, LeakyReLU -> four 4x4
stride-2 transposed convolutions (4c, 2c, c, c channels; BN, LeakyReLU after each) -> 3x3
conv -> tanh, then the same affine-free BN as above.

Layers that feed a BatchNorm carry no bias: BN subtracts the mean, so such a bias has an
exactly zero gradient, and an optimiser like Adam would only amplify rounding noise in it."""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.data import MAX_IMAGE_SIZE  # pylint: disable=unused-import  (models.MAX_IMAGE_SIZE)
from ddad_jax.models.layers import ModuleDef, UpsampleConv, batch_norm, conv3x3


def upsamplings(image_size: int) -> int:
    """How many times ``Generator`` doubles its first map to reach ``image_size``: halve the
    size while it is even and above 8 (at least twice), so the first map is 7x7 to 8x8 for the
    usual sizes (32: 8, 64: 8, 128: 8, 224: 7, 28: 7)."""
    if image_size % 4 or image_size < 4:
        raise ValueError(f"generator image_size must be a multiple of 4, got {image_size}")
    n, size = 0, image_size
    while size % 2 == 0 and (size > 8 or n < 2):
        size //= 2
        n += 1
    return n


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
        n = upsamplings(self.image_size)
        s, c = self.image_size >> n, self.base_channels
        bn = lambda **kw: batch_norm(train, self.bn_axis_name, dtype=self.dtype, **kw)
        x = nn.Dense(2 * c * s * s, use_bias=False, dtype=self.dtype)(z).reshape((z.shape[0], s, s, 2 * c))
        x = bn()(x)
        for i in range(n):  # 2c channels until the last doubling, which has c
            x = self.upsample_conv(c if i == n - 1 else 2 * c, use_bias=False, dtype=self.dtype, name=f"Conv_{i}")(x)
            x = nn.leaky_relu(bn()(x), 0.2)
        x = jnp.tanh(conv3x3(self.conv)(self.channels, use_bias=True, dtype=self.dtype, name=f"Conv_{n}")(x))
        return bn(use_bias=False, use_scale=False)(x).astype(jnp.float32)


class LargeGenerator(nn.Module):
    base_channels: int = 64
    image_size: int = 128
    channels: int = 3
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, z: jnp.ndarray, train: bool = True) -> jnp.ndarray:
        if self.image_size % 16:
            raise ValueError(f"the dfad_large generator's image_size must be a multiple of 16, got {self.image_size}")
        s, c = self.image_size // 16, self.base_channels
        bn = lambda **kw: batch_norm(train, self.bn_axis_name, dtype=self.dtype, **kw)
        x = nn.Dense(8 * c * s * s, use_bias=False, dtype=self.dtype)(z).reshape((z.shape[0], s, s, 8 * c))
        x = nn.leaky_relu(bn()(x), 0.2)
        for features in (4 * c, 2 * c, c, c):
            x = nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME", use_bias=False, dtype=self.dtype)(x)
            x = nn.leaky_relu(bn()(x), 0.2)
        x = jnp.tanh(conv3x3(self.conv)(self.channels, use_bias=True, dtype=self.dtype)(x))
        return bn(use_bias=False, use_scale=False)(x).astype(jnp.float32)


GENERATORS = {"dafl": Generator, "dfad_large": LargeGenerator}
