"""What the data-free family's configs share: the protocol argument and the Fashion-MNIST size.

Each method's file (``dafl.py``, ``dfad.py``, ``dfq.py``, ``deepinversion.py``, ``cmi.py``,
``fast.py``) holds the method's published CIFAR hyperparameters and takes the argument
``DATASET[,PAIR][,smoke]``:

    python -m experiments.cifar10 --config=configs/fast.py:cifar10,wrn40_2-wrn16_1 --workdir=runs/c10_fast \\
        --config.teacher_dir=runs/c10_wrn40_2
    python -m experiments.fashion_mnist --config=configs/fast.py:fashion_mnist --workdir=runs/fmnist_fast \\
        --config.teacher_dir=runs/fmnist_teacher

``PAIR`` is one of the CIFAR tables' teacher-student pairs (default ``resnet34-resnet18``);
Fashion-MNIST is always LeNet-5 (BN) -> LeNet-5-half, sized for a 2-core CPU;
``benchmarks/fmnist_datafree.py`` runs each under its equal wall-clock budget
(``--config.time_budget_s``); how each method's Fashion-MNIST size was chosen:
``docs/datafree.md``.
"""

from typing import Callable

import ml_collections

from configs import common


def common_fields(c: ml_collections.ConfigDict, kind: str, dataset: str, pair: str) -> ml_collections.ConfigDict:
    """Fields every data-free run has, for ``dataset`` and ``pair``."""
    common.run_fields(c, kind, dataset)
    common.distillation_fields(c, *pair.split("-"))
    c.sample_grid = 64
    c.time_budget_s = 0.0  # > 0: stop there with the student as it is (benchmarks/fmnist_datafree.py's equal budget)
    return c


def fashion_mnist(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """LeNet-5 (BN) -> LeNet-5-half at DDAD's Fashion-MNIST sizes (``configs/fmnist_lenet5.py``)."""
    c.teacher, c.student = "lenet5_bn", "lenet5_half"
    c.teacher_dir = "runs/fmnist_teacher"
    c.generator_channels, c.latent_dim, c.batch_size = 16, 100, 128
    return c


def get(method: Callable[[str, str], ml_collections.ConfigDict], name: str, arg: str) -> ml_collections.ConfigDict:
    """The config ``method(dataset, pair)`` builds for ``arg`` = ``DATASET[,PAIR][,smoke]``."""
    dataset, pair, smoke = common.parse_arg(arg, f"configs/{name}.py", "cifar10", common.PAIRS)
    return common.finish(method(dataset, pair), smoke)


def inversion(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fields of the methods that synthesise each batch by an inner optimisation
    (``ddad_jax/methods/inversion.py``), at the CMI/Fast-Datafree code base's CIFAR student
    recipe: one synthesis round an epoch, 400 student steps from the pool of every batch so far,
    KD at T = 20, SGD 0.1 (weight decay 1e-4) on a cosine schedule, batch 256."""
    from configs import kd  # pylint: disable=import-outside-toplevel
    c.generator_channels = 64
    c.generator_arch = "dafl"  # or 'dfad_large' (ddad_jax/models/generator.py)
    c.latent_dim = 256
    c.synthesis_lr, c.latent_lr = 1e-3, 1e-3
    c.bn_momentum = 0.0
    c.augment_views = True
    c.warmup_rounds = 0
    c.student_objective = "kl"
    kd.objective_fields(c)
    c.temperature = 20.0
    c.batch_size = 256
    c.num_epochs, c.iters_per_epoch = 200, 1  # rounds = num_epochs * iters_per_epoch
    c.student_steps_per_round = 400
    c.pool_size = -1  # every round's batch is kept
    c.student_optimizer, c.student_lr, c.student_momentum, c.student_weight_decay = "sgd", 0.1, 0.9, 1e-4
    c.lr_schedule = "cosine"
    c.generator_lr = 1e-3
    # CMI's contrastive term (used only with a `contrastive` generator term): the CMI code's
    # head width, local crop, bank of 40 960 past images and 4 096 negatives drawn per round
    c.contrast_temperature = 0.2
    c.contrast_head_dim = 256
    c.local_crop_area = 0.25
    c.contrast_bank_size = 40960
    c.contrast_negatives = 4096
    return c


def inversion_fashion_mnist(c: ml_collections.ConfigDict, rounds: int, student_steps: int) -> ml_collections.ConfigDict:
    """A pixel/inversion method at Fashion-MNIST size: ``rounds`` rounds (all kept in the pool)
    of ``student_steps`` student steps, the student at DDAD's Fashion-MNIST rate."""
    fashion_mnist(c)
    c.num_epochs, c.iters_per_epoch = rounds, 1
    c.student_steps_per_round = student_steps
    c.student_lr = 0.05
    c.log_every = 1
    return c
