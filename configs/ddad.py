"""DDAD: data-free distillation of a frozen BatchNorm teacher into a student.

    python -m experiments.cifar10 --config=configs/ddad.py --workdir=runs/c10_ddad \
        --config.teacher_dir=runs/c10_resnet34
    python -m experiments.fashion_mnist --config=configs/ddad.py:fashion_mnist --workdir=runs/fmnist_ddad

This file holds the method's defaults (``base()``); each protocol has its own file that
imports it and changes a few fields (``configs/fmnist_lenet5.py``,
``configs/cifar10_resnet34_resnet18.py``, ...). The argument ``DATASET[,smoke]`` picks the
dataset's default protocol; ``smoke`` shrinks any of them to seconds (``configs/common.py``). Any field can be
overridden: ``--config.generator_terms.bn=10 --config.student_objective=kl``.
"""

import ml_collections

from configs import common, kd

# The protocol file each dataset name stands for.
PROTOCOLS = {"fashion_mnist": "fmnist_lenet5", "cifar10": "cifar10_resnet34_resnet18",
             "cifar100": "cifar100_resnet34_resnet18", "caltech101": "caltech101_resnet34_resnet18"}


def base() -> ml_collections.ConfigDict:
    """DDAD on CIFAR-10 with DFAD's protocol (the setting the DDAD paper builds on)."""
    c = common.run_fields(ml_collections.ConfigDict(), "ddad", "cifar10")  # only the test split is read, if there
    common.distillation_fields(c, "resnet34", "resnet18")
    c.generator_channels = 64  # DFAD's generator
    # 'dafl': DAFL/DFAD's upsample-and-convolve generator, its doublings following the image
    # size; 'dfad_large': DFAD's transposed-convolution generator for 128x128 (Caltech101,
    # segmentation) -- ddad_jax/models/generator.py
    c.generator_arch = "dafl"
    c.latent_dim = 256

    # The generator's objective: weighted named terms (ddad_jax/objectives/generator.py).
    # DDAD's two discriminators, equally weighted: the teacher's BN statistics and the student
    # (the adversarial term is minus the L1 student-teacher discrepancy, as in DFAD).
    c.generator_terms = ml_collections.ConfigDict({"bn": 1.0, "adversarial": 1.0})
    # The student's objective (ddad_jax/objectives/student.py): L1 between logits, the same
    # discrepancy the generator maximises, so both play one game.
    c.student_objective = "l1"
    # The objectives' hyperparameters (configs/kd.py documents them); the fine-tuning KL at
    # temperature 1: on synthetic images there are no labels to balance a softer target with.
    kd.objective_fields(c)
    c.temperature = 1.0
    c.pool_size = 0  # > 0: the student also samples from the last N synthesised batches; -1: from every one
    c.pool_pixels = False  # keep the pool as 8-bit pixels (a quarter of the memory; configs/ddad_plus.py)
    # DDAD+'s generator parts (configs/ddad_plus.py), off in DDAD: BN statistics blended over
    # batches with this momentum, and the classes of a `ce` term drawn balanced per batch.
    c.bn_momentum = 0.0
    c.balanced_targets = False

    # Optimisation: DFAD's (student SGD 0.1, momentum 0.9, weight decay 5e-4; generator Adam
    # 1e-3; x0.1 at epochs 100 and 200 of 500, 50 iterations an epoch; 5 student steps per
    # generator step; batch 256).
    c.batch_size = 256  # global, split over devices
    c.compute_dtype = "float32"  # or "bfloat16": bf16 compute; weights, BN statistics and losses stay float32
    c.num_epochs = 500
    c.iters_per_epoch = 50
    c.student_steps_per_generator_step = 5
    c.student_optimizer = "sgd"
    c.student_lr = 0.1
    c.student_momentum = 0.9
    c.student_weight_decay = 5e-4
    c.generator_lr = 1e-3
    c.lr_schedule = "step"  # 'step' (lr_milestones, in epochs), 'cosine' or 'constant'
    c.generator_lr_schedule = ""  # '' = lr_schedule
    c.lr_milestones = (100, 200)
    c.lr_gamma = 0.1
    # After the adversarial epochs, student-only updates on the frozen generator's images,
    # lr finetune_lr cosine to 0 (0 epochs = off).
    c.finetune_epochs = 0
    c.finetune_lr = 0.01
    c.finetune_objective = "kl"

    # Reporting (and common.run_fields): eval_examples = 0 reports agreement with the teacher
    # on generated images instead of test accuracy (docs/data.md).
    c.sample_grid = 64  # generated images in each epoch's PNG grid; 0 = none
    c.time_budget_s = 0.0  # > 0: stop there with the student as it is (benchmarks/fmnist_datafree.py)
    return c


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    return common.from_protocols("ddad", PROTOCOLS, arg, "cifar10")
