"""HiDFD's CIFAR-10 setting: ResNet-34 -> ResNet-18 from 5 000 real images (rho = 0.1).

    python -m experiments.cifar10 --config=configs/teacher.py:cifar10 --workdir=runs/c10_resnet34
    python -m experiments.cifar10 --config=configs/cifar10_resnet34_resnet18_hidfd.py --workdir=runs/c10_hidfd \\
        --config.teacher_dir=runs/c10_resnet34
"""

import ml_collections

from configs import common, hidfd


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    return common.protocol(hidfd.base(), arg, "configs/cifar10_resnet34_resnet18_hidfd.py")
