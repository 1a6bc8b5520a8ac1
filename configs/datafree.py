"""What the data-free family's configs share: the protocol argument and the Fashion-MNIST size.

Each method's file (``dafl.py``, ``dfad.py``, ``dfq.py``, ``deepinversion.py``, ``cmi.py``,
``fast.py``) holds the method's published CIFAR hyperparameters and takes the argument
``DATASET[,PAIR][,smoke]``:

    python -m experiments.cifar10 --config=configs/fast.py:cifar10,wrn40_2-wrn16_1 --workdir=runs/c10_fast \\
        --config.teacher_dir=runs/c10_wrn40_2
    python -m experiments.fashion_mnist --config=configs/fast.py:fashion_mnist --workdir=runs/fmnist_fast \\
        --config.teacher_dir=runs/fmnist_teacher

``PAIR`` is one of the CIFAR tables' teacher-student pairs (default ``resnet34-resnet18``);
Fashion-MNIST is always LeNet-5 (BN) -> LeNet-5-half, sized for a 2-core CPU and run under
the benchmark's equal wall-clock budget (``time_budget_s``).
"""

import re
from typing import Callable, Tuple

import ml_collections

PAIRS = ("resnet34-resnet18", "wrn40_2-wrn16_1", "wrn40_2-wrn16_2", "wrn40_2-wrn40_1")
DATASETS = ("fashion_mnist", "cifar10", "cifar100")
# The data-free benchmark's budget per run on a 2-core CPU: synthesis and student together.
FMNIST_BUDGET_S = 720.0


def parse(arg: str, default_dataset: str = "cifar10") -> Tuple[str, str, bool]:
    """``DATASET[,PAIR][,smoke]`` -> (dataset, pair, smoke)."""
    parts = [p for p in (arg or default_dataset).split(",") if p]
    dataset, rest = parts[0], set(parts[1:])
    if not re.match(r"[a-z][a-z0-9_]*$", dataset):  # one of DATASETS, or the user's own (CIFAR values)
        raise ValueError(f"'{dataset}' is not a dataset name (use {', '.join(DATASETS)} or one of your own)")
    smoke = "smoke" in rest
    pairs = rest - {"smoke"}
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown or len(pairs) > 1:
        raise ValueError(f"unknown option(s) {sorted(pairs)} (known: smoke and one of {', '.join(PAIRS)})")
    return dataset, (pairs.pop() if pairs else PAIRS[0]), smoke


def common(c: ml_collections.ConfigDict, dataset: str, pair: str) -> ml_collections.ConfigDict:
    """Fields every data-free run has, for ``dataset`` and ``pair``."""
    c.dataset = dataset
    c.data_dir = ""
    c.seed = 0
    c.num_devices = 0
    c.cpu_devices = 4  # CPU-only hosts: split into gcd(this, batch_size) XLA devices (faster); 1 = off
    c.teacher_dir = ""
    c.teacher, c.student = pair.split("-")
    c.log_every = 10
    c.checkpoint_every = 0
    c.eval_batch_size = 1000
    c.eval_examples = -1  # -1 = the whole test split; 0 = none: agreement with the teacher instead (configs/ddad.py)
    c.sample_grid = 64
    c.time_budget_s = 0.0  # > 0: stop there with the student as it is (the benchmark's equal budget)
    return c


def fashion_mnist(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """LeNet-5 (BN) -> LeNet-5-half at DDAD's Fashion-MNIST sizes (``configs/fmnist_lenet5.py``)."""
    c.teacher, c.student = "lenet5_bn", "lenet5_half"
    c.teacher_dir = "runs/fmnist_teacher"
    c.generator_channels, c.latent_dim, c.batch_size = 16, 100, 128
    c.time_budget_s = FMNIST_BUDGET_S
    return c


def smoke(c: ml_collections.ConfigDict, dataset: str) -> ml_collections.ConfigDict:
    c.batch_size, c.num_epochs, c.iters_per_epoch = 16, 2, 2
    c.generator_channels, c.latent_dim = 8, 16
    c.log_every, c.eval_examples, c.eval_batch_size, c.sample_grid = 1, 64, 32, 16
    c.time_budget_s = 0.0
    if "synthesis_steps" in c:  # inversion methods: a few inner steps, a few student steps a round
        c.synthesis_steps, c.student_steps_per_round, c.pool_size = 2, 2, 4
        c.warmup_rounds = min(c.warmup_rounds, 1)
        c.contrast_bank_size, c.contrast_negatives, c.contrast_head_dim = 64, 16, 16
    else:
        c.student_steps_per_generator_step, c.lr_milestones = 2, (1,)
    if dataset != "fashion_mnist":
        c.teacher, c.student = "wrn16_1", "wrn16_1"
    return c


def get(method: Callable[[str, str], ml_collections.ConfigDict], arg: str) -> ml_collections.ConfigDict:
    """The config ``method(dataset, pair)`` builds for ``arg``, shrunk by ``smoke``."""
    dataset, pair, is_smoke = parse(arg)
    c = method(dataset, pair)
    return smoke(c, dataset) if is_smoke else c


def inversion(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The fields of the methods that synthesise each batch by an inner optimisation
    (``ddad_jax/methods/inversion.py``), at the CMI/Fast-Datafree code base's CIFAR student
    recipe: one synthesis round an epoch, 400 student steps from the pool of every batch so far,
    KD at T = 20, SGD 0.1 (weight decay 1e-4) on a cosine schedule, batch 256."""
    from configs import kd  # pylint: disable=import-outside-toplevel
    c.kind = "inversion"
    c.generator_channels = 64
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
    c.pool_size = 200  # every round's batch is kept
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
    c.pool_size = rounds
    c.student_steps_per_round = student_steps
    c.student_lr = 0.05
    c.log_every = 1
    return c
