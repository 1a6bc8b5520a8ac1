"""Knowledge distillation on real images: a trained teacher, a student, and a KD objective.

    python -m experiments.fashion_mnist --config=configs/kd.py:fashion_mnist --workdir=runs/fmnist_kd \\
        --config.teacher_dir=runs/fmnist_teacher --config.student_objective=stkd
    python -m experiments.fashion_mnist --config=configs/kd.py:fashion_mnist --workdir=runs/fmnist_kd600 \\
        --config.teacher_dir=runs/fmnist_teacher --config.train_examples=600   # a few real images
    python -m experiments.cifar100 --config=configs/kd.py:cifar100 --workdir=runs/c100_ctkd \\
        --config.teacher_dir=runs/c100_wrn40_2 --config.student_objective=ctkd

``student_objective`` is one of ``scratch`` (no teacher: the student trained from scratch),
``kd``, ``stkd``, ``ctkd``, ``ka``, ``dtd``, ``ka_dtd`` (``ddad_jax/objectives/student.py``).
The argument ``DATASET[,smoke]`` picks the dataset's protocol file
(``configs/fmnist_lenet5_kd.py``, ``configs/cifar100_wrn40_2_wrn16_2_kd.py``, ...).
"""

import ml_collections

from configs import common

PROTOCOLS = {"fashion_mnist": "fmnist_lenet5_kd", "cifar10": "cifar10_wrn40_2_wrn16_2_kd",
             "cifar100": "cifar100_wrn40_2_wrn16_2_kd"}


def objective_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The student objectives' hyperparameters (``objectives.KDParams``), shared with the
    data-free methods, which use the objectives that need no labels."""
    c.temperature = 4.0  # Hinton's KD and most CIFAR KD papers' temperature
    c.kd_alpha = 0.9  # the teacher's share; 1 - kd_alpha goes to cross-entropy on the labels
    # DTD (arXiv 1911.07471): tau_x = temperature + (batch mean of w - w_x) * dtd_beta, with
    # w_x = (1 - cos(student, teacher logits))^dtd_gamma; beta 1 and gamma 2 as in TextBrewer's
    # implementation of the paper (its own values were not readable), clipped at 1.
    c.dtd_beta, c.dtd_gamma, c.dtd_min_temperature = 1.0, 2.0, 1.0
    # CTKD (arXiv 1907.09643): the attention-transfer weight 1e3 and the logit-hint weight 0.03
    # of the attention-transfer and rocket-launching code that CTKD's reference code builds on.
    c.attention_weight, c.scratch_weight = 1000.0, 0.03
    c.mixup_alpha = 1.0  # STKD: lam ~ Beta(1, 1), uniform mixing weights (mixup's CIFAR default)
    return c


def base() -> ml_collections.ConfigDict:
    """KD into a CIFAR student with the standard CIFAR recipe (SGD 0.1, 240 epochs as in CRD's
    benchmark of KD methods, x0.1 at 150/180/210)."""
    c = common.run_fields(ml_collections.ConfigDict(), "kd", "cifar100")
    common.distillation_fields(c, "wrn40_2", "wrn16_2")
    c.student_objective = "kd"
    objective_fields(c)
    c.train_examples = -1  # -1 = the whole training split; N = N images drawn class-balanced (seeded)
    c.batch_size = 64
    c.num_epochs = 240
    c.steps_per_epoch = -1  # -1 = one pass over the training images (rounded up)
    c.optimizer, c.learning_rate, c.momentum, c.weight_decay = "sgd", 0.05, 0.9, 5e-4
    c.schedule, c.lr_milestones, c.lr_gamma = "step", (150, 180, 210), 0.1
    c.log_every = 100
    return c


def get_config(arg: str = "cifar100") -> ml_collections.ConfigDict:
    return common.from_protocols("kd", PROTOCOLS, arg, "cifar100")
