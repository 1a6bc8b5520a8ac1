"""DDAD on CIFAR-100: ResNet-34 -> ResNet-18 with DFAD's protocol (for a GPU or TPU host).

    python -m experiments.cifar100 --config=configs/teacher.py:cifar100 --workdir=runs/cifar100_resnet34 --config.model=resnet34
    python -m experiments.cifar100 --config=configs/cifar100_resnet34_resnet18.py --workdir=runs/cifar100_ddad_resnet18 \
        --config.teacher_dir=runs/cifar100_resnet34
"""

import ml_collections

from configs import common, ddad


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ddad.base()
    c.dataset = "cifar100"
    c.teacher, c.student = "resnet34", "resnet18"  # DFAD and DDAD's CIFAR pair
    return common.protocol(c, arg, "configs/cifar100_resnet34_resnet18.py")
