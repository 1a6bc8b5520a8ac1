"""Models by name, so configs can say ``teacher='resnet34'``."""

import functools
from typing import Any, Callable, Dict, Optional

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.errors import UserError
from ddad_jax.models.generator import Generator
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
    "wrn16_1": functools.partial(WideResNet, depth=16, widen_factor=1),
    "wrn16_2": functools.partial(WideResNet, depth=16, widen_factor=2),
    "wrn40_2": functools.partial(WideResNet, depth=40, widen_factor=2),
}

CLASSIFIERS = tuple(sorted(_CLASSIFIERS))


def get_classifier(name: str, num_classes: int, bn_axis_name: Optional[str] = None,
                   dtype: Any = jnp.float32) -> nn.Module:
    if name not in _CLASSIFIERS:
        raise UserError(f"unknown model '{name}'; choose one of {', '.join(CLASSIFIERS)}")
    return _CLASSIFIERS[name](num_classes=num_classes, bn_axis_name=bn_axis_name, dtype=dtype)


__all__ = ["CLASSIFIERS", "Generator", "get_classifier", "LeNet5", "CifarResNet", "WideResNet"]
