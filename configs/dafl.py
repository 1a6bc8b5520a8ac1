"""DAFL (Chen et al. 2019): a generator trained to make the teacher confident (one-hot),
class-balanced (information entropy) and strongly activated; the student learns by KD.

    python -m experiments.cifar10 --config=configs/dafl.py:cifar10,wrn40_2-wrn16_1 --workdir=runs/c10_dafl \\
        --config.teacher_dir=runs/c10_wrn40_2

CIFAR values: the CMI/Fast-Datafree code base's DAFL (its generator, terms and student
recipe; docs/reference/datafree_methods.md section 2.1). Fashion-MNIST: DAFL's own MNIST
LeNet-5 setting (section 2.2).
"""

import math

import ml_collections

from configs import datafree, ddad


def config(dataset: str, pair: str) -> ml_collections.ConfigDict:
    c = datafree.common_fields(ddad.base(), "ddad", dataset, pair)
    c.method = "dafl"
    # one-hot 1, class balance 20 (natural log), activation 0.001; no BN term, no adversary
    c.generator_terms = ml_collections.ConfigDict({"onehot": 1.0, "balance": 20.0, "activation": 0.001})
    c.latent_dim = 512
    c.student_objective, c.temperature = "kl", 1.0  # the code base's KL at T = 1 for DAFL
    c.batch_size = 256
    c.student_steps_per_generator_step = 5
    c.num_epochs, c.iters_per_epoch = 200, 80  # 400 student steps an epoch
    c.student_lr, c.student_weight_decay, c.lr_schedule = 0.1, 1e-4, "cosine"
    c.generator_lr, c.generator_lr_schedule = 1e-3, "constant"
    c.finetune_epochs = 0
    if dataset == "fashion_mnist":
        datafree.fashion_mnist(c)
        # DAFL's MNIST weights: one-hot 1, entropy 5 with log10 (5 / ln 10 with the natural log
        # used here), activation 0.1; both networks Adam (student 2e-3; the generator's 0.2 is
        # DAFL's for its eps-0.8 BatchNorm generator, 1e-3 for this one)
        c.generator_terms = ml_collections.ConfigDict({"onehot": 1.0, "balance": 5.0 / math.log(10.0),
                                                       "activation": 0.1})
        c.latent_dim = 100
        c.student_optimizer, c.student_lr, c.student_weight_decay = "adam", 2e-3, 0.0
        # sized to the data-free benchmark's 12 minutes on 2 CPU cores (docs/datafree.md, "Sizing")
        c.num_epochs, c.iters_per_epoch = 150, 25
    return c


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    return datafree.get(config, "dafl", arg)
