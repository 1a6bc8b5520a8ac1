"""Wide ResNets for CIFAR (pre-activation blocks): WRN-depth-k, e.g. 16-1, 16-2, 40-2."""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.models.layers import ModuleDef, batch_norm, conv3x3, sow_feature


class WideBlock(nn.Module):
    features: int
    stride: int
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32  # compute dtype (bfloat16 for mixed precision); params stay float32
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda: batch_norm(train, self.bn_axis_name, dtype=self.dtype)
        conv3 = conv3x3(self.conv)
        out = nn.relu(bn()(x))
        y = conv3(self.features, strides=self.stride, dtype=self.dtype)(out)
        y = conv3(self.features, dtype=self.dtype)(nn.relu(bn()(y)))
        if x.shape[-1] != self.features or self.stride != 1:
            x = self.conv(self.features, (1, 1), strides=self.stride, use_bias=False, dtype=self.dtype)(out)
        return x + y


class WideResNet(nn.Module):
    head = "Dense_0"  # the classifier's parameters: the last Dense layer (see models.head_logits)
    depth: int
    widen_factor: int
    num_classes: int = 10
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32  # compute dtype (bfloat16 for mixed precision); params stay float32
    conv: ModuleDef = nn.Conv
    penultimate: bool = False  # True: return the features that enter the classifier, not logits

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if (self.depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {self.depth}")
        n = (self.depth - 4) // 6
        x = conv3x3(self.conv)(16, dtype=self.dtype)(x.astype(self.dtype))
        for i, width in enumerate((16, 32, 64)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                block = WideBlock(width * self.widen_factor, stride, self.bn_axis_name, self.dtype, conv=self.conv)
                x = block(x, train)
            sow_feature(self, f"attention{i + 1}", x)
        x = nn.relu(batch_norm(train, self.bn_axis_name, dtype=self.dtype)(x))
        x = jnp.mean(x, axis=(1, 2))
        sow_feature(self, "penultimate", x)
        if self.penultimate:
            return x.astype(jnp.float32)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
