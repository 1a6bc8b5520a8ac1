"""CIFAR ResNets (3x3 stem, no max-pool), BasicBlock: ResNet-18 and ResNet-34 (4 stages from
64 channels), and He et al.'s CIFAR ResNet-20 and ResNet-110 (3 stages from 16 channels,
3 and 18 blocks each), the KD papers' CIFAR-100 pair."""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.models.layers import ModuleDef, batch_norm, conv3x3, sow_feature


class BasicBlock(nn.Module):
    features: int
    stride: int = 1
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32  # compute dtype (bfloat16 for mixed precision); params stay float32
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda: batch_norm(train, self.bn_axis_name, dtype=self.dtype)
        conv3 = conv3x3(self.conv)
        y = conv3(self.features, strides=self.stride, dtype=self.dtype)(x)
        y = nn.relu(bn()(y))
        y = conv3(self.features, dtype=self.dtype)(y)
        y = bn()(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = self.conv(self.features, (1, 1), strides=self.stride, use_bias=False, dtype=self.dtype)(x)
            x = bn()(x)
        return nn.relu(x + y)


class CifarResNet(nn.Module):
    head = "Dense_0"  # the classifier's parameters: the last Dense layer (see models.head_logits)
    stage_sizes: Sequence[int]
    width: int = 64  # the first stage's channels, doubled at each later stage
    num_classes: int = 10
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32  # compute dtype (bfloat16 for mixed precision); params stay float32
    conv: ModuleDef = nn.Conv
    penultimate: bool = False  # True: return the features that enter the classifier, not logits

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = conv3x3(self.conv)(self.width, dtype=self.dtype)(x.astype(self.dtype))
        x = nn.relu(batch_norm(train, self.bn_axis_name, dtype=self.dtype)(x))
        for i, blocks in enumerate(self.stage_sizes):
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                x = BasicBlock(self.width * 2**i, stride, self.bn_axis_name, self.dtype, conv=self.conv)(x, train)
            sow_feature(self, f"attention{i + 1}", x)
        x = jnp.mean(x, axis=(1, 2))
        sow_feature(self, "penultimate", x)
        if self.penultimate:
            return x.astype(jnp.float32)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
