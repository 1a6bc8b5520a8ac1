"""ImageNet-style backbones with torchvision's structure, for inputs of any size (global pooling):
ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck) with the 7x7 stride-2 stem and 3x3
max-pooling, and MobileNetV2 with a width multiplier.

Every convolution pads as PyTorch does (``k // 2 * dilation`` on each side, also at stride 2,
where Flax's 'SAME' would pad only the far side), so a torchvision ``state_dict`` imported with
``ddad_jax.torch_import`` computes the same function. ``replace_stride_with_dilation`` is
torchvision's: for dense prediction (DeepLabV3) the last stages keep their resolution and dilate
their 3x3 convolutions instead (ResNet-50 only, as in torchvision, whose BasicBlock refuses
dilation).
"""

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.models.layers import ModuleDef, batch_norm, sow_feature


def torch_padding(kernel: int, dilation: int = 1) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """PyTorch's symmetric padding for an odd ``kernel``: ``kernel // 2 * dilation`` each side."""
    p = kernel // 2 * dilation
    return ((p, p), (p, p))


def _conv(conv: ModuleDef, features: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1,
          dtype: Any = jnp.float32) -> nn.Module:
    """A bias-free ``kernel`` x ``kernel`` convolution padded as PyTorch pads it."""
    return conv(features, (kernel, kernel), strides=stride, padding=torch_padding(kernel, dilation),
                kernel_dilation=dilation, feature_group_count=groups, use_bias=False, dtype=dtype)


class _Block(nn.Module):
    """The fields torchvision's two ResNet blocks share (one signature for ``ResNet``)."""
    features: int
    stride: int = 1
    dilation: int = 1  # the 3x3 convolution's; BasicBlock has none, as in torchvision
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv


class BasicBlock(_Block):
    """torchvision's BasicBlock: two 3x3 convolutions, a 1x1 projection where the shape changes."""

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda: batch_norm(train, self.bn_axis_name, dtype=self.dtype)
        y = nn.relu(bn()(_conv(self.conv, self.features, 3, self.stride, dtype=self.dtype)(x)))
        y = bn()(_conv(self.conv, self.features, 3, dtype=self.dtype)(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = bn()(_conv(self.conv, self.features, 1, self.stride, dtype=self.dtype)(x))
        return nn.relu(x + y)


class Bottleneck(_Block):
    """torchvision's Bottleneck (ResNet v1.5: the stride sits on the 3x3 convolution): 1x1 down
    to ``features``, 3x3 (strided or dilated), 1x1 up to 4x ``features``."""

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda: batch_norm(train, self.bn_axis_name, dtype=self.dtype)
        out = 4 * self.features
        y = nn.relu(bn()(_conv(self.conv, self.features, 1, dtype=self.dtype)(x)))
        y = nn.relu(bn()(_conv(self.conv, self.features, 3, self.stride, self.dilation, dtype=self.dtype)(y)))
        y = bn()(_conv(self.conv, out, 1, dtype=self.dtype)(y))
        if self.stride != 1 or x.shape[-1] != out:
            x = bn()(_conv(self.conv, out, 1, self.stride, dtype=self.dtype)(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """torchvision's ResNet: 7x7/2 stem, BN, ReLU, 3x3/2 max-pool, four stages of 64-512 block
    widths, global average pooling, a Dense classifier (``fc``)."""
    head = "Dense_0"  # the classifier's parameters (see models.head_logits)
    stage_sizes: Sequence[int]
    bottleneck: bool = False
    num_classes: int = 1000
    replace_stride_with_dilation: Tuple[bool, bool, bool] = (False, False, False)  # stages 2-4
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32  # compute dtype (bfloat16 for mixed precision); params stay float32
    conv: ModuleDef = nn.Conv
    penultimate: bool = False  # True: return the features that enter the classifier, not logits
    dense_features: bool = False  # True: return the last stage's map (N, H/s, W/s, C), no pooling

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        block = Bottleneck if self.bottleneck else BasicBlock
        if any(self.replace_stride_with_dilation) and not self.bottleneck:
            raise ValueError("dilation needs Bottleneck blocks (torchvision's BasicBlock has none)")
        x = _conv(self.conv, 64, 7, 2, dtype=self.dtype)(x.astype(self.dtype))
        x = nn.relu(batch_norm(train, self.bn_axis_name, dtype=self.dtype)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=torch_padding(3))
        dilation = 1
        for i, blocks in enumerate(self.stage_sizes):
            stride = 1 if i == 0 else 2
            previous = dilation
            if i > 0 and self.replace_stride_with_dilation[i - 1]:
                dilation, stride = dilation * stride, 1
            for j in range(blocks):
                x = block(64 * 2**i, stride if j == 0 else 1, previous if j == 0 else dilation,
                          self.bn_axis_name, self.dtype, self.conv)(x, train)
            sow_feature(self, f"attention{i + 1}", x)
        return _head(self, x)


def _head(module: nn.Module, x: jnp.ndarray) -> jnp.ndarray:
    """The end both backbones share, called inside their compact ``__call__``: the last feature
    map as it is (``dense_features``, for a segmentation head), else global average pooling, the
    sown ``penultimate`` features and the linear classifier (or those features, ``penultimate``)."""
    if module.dense_features:
        return x
    x = jnp.mean(x, axis=(1, 2))
    sow_feature(module, "penultimate", x)
    if module.penultimate:
        return x.astype(jnp.float32)
    return nn.Dense(module.num_classes, dtype=module.dtype)(x).astype(jnp.float32)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: the nearest multiple of ``divisor`` (at least
    ``divisor``), one more when rounding lost over 10 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# MobileNetV2's inverted-residual stages: (expansion t, channels c, blocks n, first stride s).
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_LAST_AT_STRIDE = (1, 2, 4)  # the stages that end output strides 4, 8 and 16 (32 ends at the last 1x1)


class InvertedResidual(nn.Module):
    """1x1 expansion (unless t = 1), 3x3 depthwise, 1x1 linear projection; ReLU6; the input
    added back where stride is 1 and the channels stay."""
    features: int
    stride: int
    expansion: int
    dilation: int = 1
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda: batch_norm(train, self.bn_axis_name, dtype=self.dtype)
        hidden = int(round(x.shape[-1] * self.expansion))
        y = x
        if self.expansion != 1:
            y = nn.relu6(bn()(_conv(self.conv, hidden, 1, dtype=self.dtype)(y)))
        y = nn.relu6(bn()(_conv(self.conv, hidden, 3, self.stride, self.dilation, groups=hidden, dtype=self.dtype)(y)))
        y = bn()(_conv(self.conv, self.features, 1, dtype=self.dtype)(y))
        return x + y if self.stride == 1 and x.shape[-1] == self.features else y


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2: 3x3/2 stem to 32·w channels, 17 inverted-residual blocks,
    a 1x1 convolution to 1280·max(1, w) channels, global average pooling, a Dense classifier
    (torchvision's dropout before it is left out: it is the identity at inference). Features
    are sown at each output stride (4, 8, 16, 32) as ``attention1..4``."""
    head = "Dense_0"
    width: float = 1.0
    num_classes: int = 1000
    output_stride: int = 32  # 8 or 16 for dense prediction: later strides become dilation
    bn_axis_name: Optional[str] = None
    dtype: Any = jnp.float32
    conv: ModuleDef = nn.Conv
    penultimate: bool = False
    dense_features: bool = False  # True: return the last feature map, no pooling

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        bn = lambda: batch_norm(train, self.bn_axis_name, dtype=self.dtype)
        x = _conv(self.conv, make_divisible(32 * self.width), 3, 2, dtype=self.dtype)(x.astype(self.dtype))
        x = nn.relu6(bn()(x))
        stride, dilation, level = 2, 1, 0  # the map's stride so far; the 3x3 convolutions' dilation
        for i, (t, c, n, s) in enumerate(MOBILENET_V2_STAGES):
            previous = dilation
            if stride == self.output_stride:  # keep the resolution, dilate instead
                first_stride, dilation = 1, dilation * s
            else:
                first_stride, stride = s, stride * s
            for j in range(n):
                x = InvertedResidual(make_divisible(c * self.width), first_stride if j == 0 else 1, t,
                                     previous if j == 0 else dilation, self.bn_axis_name, self.dtype, self.conv)(x, train)
            if i in _LAST_AT_STRIDE:
                level += 1
                sow_feature(self, f"attention{level}", x)
        x = _conv(self.conv, make_divisible(1280 * max(1.0, self.width)), 1, dtype=self.dtype)(x)
        x = nn.relu6(bn()(x))
        sow_feature(self, f"attention{level + 1}", x)
        return _head(self, x)
