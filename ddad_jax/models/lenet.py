"""LeNet-5 as used by DAFL/DFAD (32x32 inputs), its half-width student, and a BN variant.

DAFL's LeNet-5 has no BatchNorm; ``use_bn=True`` adds one after each convolution so the
network carries the running statistics DDAD's first discriminator needs.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.models import layers
from ddad_jax.models.layers import ModuleDef, batch_norm, sow_feature


class LeNet5(nn.Module):
    head = "Dense_1"  # the classifier's parameters: the last Dense layer (see models.head_logits)
    num_classes: int = 10
    width: float = 1.0  # 0.5 gives LeNet-5-half: 3, 8, 60 channels and 42 hidden units
    use_bn: bool = False
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32  # compute dtype (bfloat16 for mixed precision); params stay float32
    conv: ModuleDef = nn.Conv
    penultimate: bool = False  # True: return the features that enter the classifier, not logits
    max_pool: Callable[[jnp.ndarray, int], jnp.ndarray] = layers.max_pool  # (x, size) -> x

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        c1, c2, c3, hidden = (int(c * self.width) for c in (6, 16, 120, 84))

        def conv_block(x, features):
            x = self.conv(features, (5, 5), padding="VALID", dtype=self.dtype)(x)
            if self.use_bn:
                x = batch_norm(train, self.bn_axis_name, dtype=self.dtype)(x)
            return nn.relu(x)

        x = conv_block(x.astype(self.dtype), c1)
        sow_feature(self, "attention1", x)
        x = self.max_pool(x, 2)
        x = conv_block(x, c2)
        sow_feature(self, "attention2", x)
        x = self.max_pool(x, 2)
        x = conv_block(x, c3)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(hidden, dtype=self.dtype)(x))
        sow_feature(self, "penultimate", x)
        if self.penultimate:
            return x.astype(jnp.float32)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
