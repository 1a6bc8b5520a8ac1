"""Models by name, so configs can say ``teacher='resnet34'``.

The models are plain Flax; the layers a backend implements its own way (convolution,
LeNet's max pooling, the generator's upsampling convolution) are module fields. The
registry fills them from ``ops``, by default ``backends.ops_for()``: on a CPU host the
faster CPU paths, elsewhere plain Flax. Either way the parameters are the same.
"""

from __future__ import annotations  # ``backends`` imports ``layers`` from this package

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax import backends
from ddad_jax.errors import UserError
from ddad_jax.models.generator import GENERATORS, MAX_IMAGE_SIZE, Generator, LargeGenerator
from ddad_jax.models.imagenet import MobileNetV2, ResNet
from ddad_jax.models.lenet import LeNet5
from ddad_jax.models.resnet import CifarResNet
from ddad_jax.models.wrn import WideResNet

_CLASSIFIERS: Dict[str, Callable[..., nn.Module]] = {
    "lenet5": functools.partial(LeNet5, width=1.0, use_bn=False),
    "lenet5_bn": functools.partial(LeNet5, width=1.0, use_bn=True),
    "lenet5_half": functools.partial(LeNet5, width=0.5, use_bn=False),
    "lenet5_half_bn": functools.partial(LeNet5, width=0.5, use_bn=True),
    "resnet18": functools.partial(CifarResNet, stage_sizes=(2, 2, 2, 2)),
    "resnet34": functools.partial(CifarResNet, stage_sizes=(3, 4, 6, 3)),
    "resnet20": functools.partial(CifarResNet, stage_sizes=(3, 3, 3), width=16),
    "resnet110": functools.partial(CifarResNet, stage_sizes=(18, 18, 18), width=16),
    "wrn16_1": functools.partial(WideResNet, depth=16, widen_factor=1),
    "wrn16_2": functools.partial(WideResNet, depth=16, widen_factor=2),
    "wrn40_1": functools.partial(WideResNet, depth=40, widen_factor=1),
    "wrn40_2": functools.partial(WideResNet, depth=40, widen_factor=2),
    # ImageNet-style, torchvision's structure and names (any input size; models/imagenet.py)
    "resnet18_imagenet": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2)),
    "resnet34_imagenet": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3)),
    "resnet50_imagenet": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), bottleneck=True),
    "mobilenet_v2": functools.partial(MobileNetV2, width=1.0),
    "mobilenet_v2_050": functools.partial(MobileNetV2, width=0.5),
    "mobilenet_v2_035": functools.partial(MobileNetV2, width=0.35),
}

CLASSIFIERS = tuple(sorted(_CLASSIFIERS))


def _op_fields(model: type, ops: Optional[backends.Ops]) -> Dict[str, Any]:
    """The fields of ``ops`` (default: the current backend's) that ``model`` declares."""
    ops = ops or backends.ops_for()
    declared = {f.name for f in dataclasses.fields(model)}
    return {f.name: getattr(ops, f.name) for f in dataclasses.fields(ops) if f.name in declared}


def get_classifier(name: str, num_classes: int, bn_axis_name: Optional[str] = None,
                   dtype: Any = jnp.float32, ops: Optional[backends.Ops] = None) -> nn.Module:
    """The classifier ``name`` (one of ``CLASSIFIERS``), its layers from ``ops`` (default
    ``backends.ops_for()``, which starts JAX's backend)."""
    if name not in _CLASSIFIERS:
        raise UserError(f"unknown model '{name}'; choose one of {', '.join(CLASSIFIERS)}")
    factory = _CLASSIFIERS[name]
    return factory(num_classes=num_classes, bn_axis_name=bn_axis_name, dtype=dtype, **_op_fields(factory.func, ops))


def get_generator(base_channels: int, image_size: int, channels: int, bn_axis_name: Optional[str] = None,
                  dtype: Any = jnp.float32, ops: Optional[backends.Ops] = None, arch: str = "dafl") -> nn.Module:
    """The generator ``arch`` (``GENERATORS``: ``dafl``, DAFL/DFAD's, its doublings following
    ``image_size``; ``dfad_large``, DFAD's transposed-convolution generator for 128x128), its
    layers from ``ops`` (default ``backends.ops_for()``)."""
    if arch not in GENERATORS:
        raise UserError(f"unknown generator '{arch}'; choose one of {', '.join(GENERATORS)}")
    if not 4 <= image_size <= MAX_IMAGE_SIZE:
        raise UserError(f"image size {image_size} is outside what the generators make (4 to {MAX_IMAGE_SIZE})")
    cls = GENERATORS[arch]
    return cls(base_channels, image_size, channels, bn_axis_name=bn_axis_name, dtype=dtype, **_op_fields(cls, ops))


__all__ = ["CLASSIFIERS", "GENERATORS", "Generator", "LargeGenerator", "get_classifier", "get_generator", "LeNet5", "CifarResNet", "WideResNet",
           "ResNet", "MobileNetV2"]
