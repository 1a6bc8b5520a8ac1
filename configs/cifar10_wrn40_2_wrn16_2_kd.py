"""KD on CIFAR-10: WRN-40-2 -> WRN-16-2, the pair of CTKD's family (wide ResNets, an
expert WRN-40-k guiding a WRN-16-k) and of CRD's benchmark of KD objectives.

    python -m experiments.cifar10 --config=configs/teacher.py:cifar10 --workdir=runs/c10_wrn40_2 \\
        --config.model=wrn40_2 --config.num_epochs=240
    python -m experiments.cifar10 --config=configs/cifar10_wrn40_2_wrn16_2_kd.py --workdir=runs/c10_kd \\
        --config.teacher_dir=runs/c10_wrn40_2 --config.student_objective=ctkd
"""

import ml_collections

from configs import common, kd


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = kd.base()
    c.dataset = "cifar10"
    c.teacher, c.student = "wrn40_2", "wrn16_2"
    return common.protocol(c, arg, "configs/cifar10_wrn40_2_wrn16_2_kd.py")
