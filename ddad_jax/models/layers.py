"""Layer helpers shared by the model definitions."""

import functools
from typing import Optional

import flax.linen as nn

from ddad_jax.models import conv as conv_lib


def batch_norm(train: bool, axis_name: Optional[str] = None, **kwargs) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5).

    ``axis_name`` makes train-mode statistics global over a named (data-parallel)
    axis; in inference mode the running averages are used and no collective runs.
    """
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        axis_name=axis_name if train else None, **kwargs)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_lib.conv_general_dilated)
"""``nn.Conv`` with the CPU-friendly weight gradient of ``conv.py``; every model uses it."""

conv3x3 = functools.partial(Conv, kernel_size=(3, 3), padding=1, use_bias=False)
