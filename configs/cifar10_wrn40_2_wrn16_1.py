"""DDAD on CIFAR-10: WRN-40-2 -> WRN-16-1 with DFAD's protocol (for a GPU or TPU host).

    python -m experiments.cifar10 --config=configs/teacher.py:cifar10 --workdir=runs/cifar10_wrn40_2 --config.model=wrn40_2
    python -m experiments.cifar10 --config=configs/cifar10_wrn40_2_wrn16_1.py --workdir=runs/cifar10_ddad_wrn16_1 \
        --config.teacher_dir=runs/cifar10_wrn40_2
"""

import ml_collections

from configs import common, ddad


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ddad.base()
    c.dataset = "cifar10"
    c.teacher, c.student = "wrn40_2", "wrn16_1"
    # The WRN pair of the data-free literature's CIFAR tables (DAFL, DFAD, CMI, Fast).
    return common.protocol(c, arg, "configs/cifar10_wrn40_2_wrn16_1.py")
