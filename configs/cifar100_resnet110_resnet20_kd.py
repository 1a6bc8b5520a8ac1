"""KD on CIFAR-100: ResNet-110 -> ResNet-20 (He et al.'s CIFAR ResNets), the pair of the STKD
and CTKD first author's CIFAR code (github HaoranZhao1988/kd), and a common pair in KD papers.

    python -m experiments.cifar100 --config=configs/teacher.py:cifar100 --workdir=runs/c100_resnet110 \\
        --config.model=resnet110 --config.num_epochs=240
    python -m experiments.cifar100 --config=configs/cifar100_resnet110_resnet20_kd.py --workdir=runs/c100_stkd \\
        --config.teacher_dir=runs/c100_resnet110 --config.student_objective=stkd
"""

import ml_collections

from configs import common, kd


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = kd.base()
    c.dataset = "cifar100"
    c.teacher, c.student = "resnet110", "resnet20"
    return common.protocol(c, arg, "configs/cifar100_resnet110_resnet20_kd.py")
