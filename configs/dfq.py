"""DFQ (Choi et al. 2020): a generator with BN statistics, one-hot, class balance and an
adversarial KL; the student learns by KD.

    python -m experiments.cifar10 --config=configs/dfq.py:cifar10,wrn40_2-wrn16_1 --workdir=runs/c10_dfq \\
        --config.teacher_dir=runs/c10_wrn40_2

CIFAR values: the CMI/Fast-Datafree code base's DFQ (docs/reference/datafree_methods.md
section 5), with the real student in the adversarial term (that code base's later copy
passes the teacher, a bug that silences the term).
"""

import ml_collections

from configs import datafree, ddad


def config(dataset: str, pair: str) -> ml_collections.ConfigDict:
    c = datafree.common_fields(ddad.base(), "ddad", dataset, pair)
    c.method = "dfq"
    c.generator_terms = ml_collections.ConfigDict({"bn": 1.0, "onehot": 1.0, "adversarial_kl": 1.0,
                                                   "balance": 20.0})
    c.student_objective, c.temperature = "kl", 1.0
    c.batch_size = 256
    c.student_steps_per_generator_step = 10
    c.num_epochs, c.iters_per_epoch = 200, 40  # 400 student steps an epoch
    c.student_lr, c.student_weight_decay, c.lr_schedule = 0.1, 1e-4, "cosine"
    c.generator_lr, c.generator_lr_schedule = 1e-3, "constant"
    c.finetune_epochs = 0
    if dataset == "fashion_mnist":
        datafree.fashion_mnist(c)
        c.student_steps_per_generator_step = 5
        c.student_lr = 0.05  # DDAD's Fashion-MNIST student rate (configs/fmnist_lenet5.py)
        # sized to the data-free benchmark's 12 minutes on 2 CPU cores (docs/datafree.md, "Sizing")
        c.num_epochs, c.iters_per_epoch = 140, 25
    return c


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    return datafree.get(config, "dfq", arg)
