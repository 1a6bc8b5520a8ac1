"""Supervised teacher training.

    python -m experiments.fashion_mnist --config=configs/teacher.py:fashion_mnist --workdir=runs/fmnist_teacher
    python -m experiments.cifar10 --config=configs/teacher.py:cifar10 --workdir=runs/c10_resnet34
    python -m experiments.cifar100 --config=configs/teacher.py:cifar100 --workdir=runs/c100_resnet34
    python -m experiments.custom --config=configs/teacher.py:NAME --workdir=runs/NAME_teacher

The argument is ``DATASET[,smoke]``; ``smoke`` shrinks the run to seconds. Any field can
be overridden, e.g. ``--config.model=wrn40_2 --config.num_epochs=100``. A dataset of your
own (``python -m ddad_jax.data.prepare NAME --from_folder=DIR``, docs/data.md) gets the
CIFAR recipe; small grayscale images may rather want ``--config.model=lenet5_bn``.
"""

import ml_collections

from configs import protocol


def get_config(arg: str = "fashion_mnist") -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "fashion_mnist").split(",") if p]
    dataset, options = protocol.custom_dataset(parts[0], "teacher"), set(parts[1:])
    c = ml_collections.ConfigDict()
    c.kind = "teacher"
    c.dataset = dataset
    c.data_dir = ""  # '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.seed = 0
    c.num_devices = 0  # 0 = all visible devices
    c.cpu_devices = 4  # CPU-only hosts: split into gcd(this, batch_size) XLA devices (faster); 1 = off
    c.log_every = 100
    c.eval_batch_size = 1000
    c.eval_examples = -1  # -1 = the whole test split; 0 = none (also when the dataset has no test split)
    c.steps_per_epoch = -1  # -1 = one pass over the train split
    if dataset == "fashion_mnist":
        # LeNet-5 with BatchNorm (DDAD's first discriminator needs BN statistics).
        c.model = "lenet5_bn"
        c.batch_size = 128
        c.num_epochs = 10
        c.optimizer, c.learning_rate, c.schedule = "adam", 1e-3, "cosine"
        c.momentum, c.weight_decay = 0.9, 0.0
    else:  # CIFAR-10/100, and any dataset of your own
        c.model = "resnet34"
        c.batch_size = 128
        c.num_epochs = 200
        c.optimizer, c.learning_rate, c.schedule = "sgd", 0.1, "cosine"
        c.momentum, c.weight_decay = 0.9, 5e-4
    if "smoke" in options:
        c.num_epochs, c.steps_per_epoch, c.log_every = 1, 4, 2
        c.batch_size, c.eval_examples, c.eval_batch_size = 16, 64, 32
        if dataset != "fashion_mnist":
            c.model = "wrn16_1"
    unknown = options - {"smoke"}
    if unknown:
        raise ValueError(f"configs/teacher.py: unknown option(s) {sorted(unknown)} (known: smoke)")
    return c
