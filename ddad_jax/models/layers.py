"""Layer helpers shared by the model definitions."""

import functools
from typing import Optional

import flax.linen as nn


def batch_norm(train: bool, axis_name: Optional[str] = None, **kwargs) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5).

    ``axis_name`` makes train-mode statistics global over a named (data-parallel)
    axis; in inference mode the running averages are used and no collective runs.
    """
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        axis_name=axis_name if train else None, **kwargs)


conv3x3 = functools.partial(nn.Conv, kernel_size=(3, 3), padding=1, use_bias=False)
