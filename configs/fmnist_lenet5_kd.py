"""KD on Fashion-MNIST: LeNet-5 (BN) -> LeNet-5-half, sized for a 2-core CPU.

    python -m experiments.fashion_mnist --config=configs/teacher.py:fashion_mnist --workdir=runs/fmnist_teacher
    python -m experiments.fashion_mnist --config=configs/fmnist_lenet5_kd.py --workdir=runs/fmnist_kd \\
        --config.student_objective=ka_dtd

The same teacher and student as the data-free protocol (``configs/fmnist_lenet5.py``), so
the two tables compare; ``benchmarks/fmnist_supervised.py`` runs every objective on it.
"""

import ml_collections

from configs import common, kd


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = kd.base()
    c.dataset = "fashion_mnist"
    c.teacher_dir = "runs/fmnist_teacher"  # where configs/teacher.py:fashion_mnist's run is exported
    c.teacher, c.student = "lenet5_bn", "lenet5_half"
    # The teacher's own recipe (configs/teacher.py): Adam 1e-3 cosine, batch 128, 10 epochs
    # (the student trained from scratch this way is the reference every objective must beat).
    c.batch_size, c.num_epochs = 128, 10
    c.optimizer, c.learning_rate, c.schedule, c.weight_decay = "adam", 1e-3, "cosine", 0.0
    c.log_every = 100
    return common.protocol(c, arg, "configs/fmnist_lenet5_kd.py")
