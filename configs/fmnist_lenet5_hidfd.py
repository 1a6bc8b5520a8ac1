"""HiDFD on Fashion-MNIST: LeNet-5 (BN) -> LeNet-5-half from 600 real images (1 % of the
training set; ``--config.train_examples=120`` for 0.2 %), sized for a 2-core CPU.

    python -m experiments.fashion_mnist --config=configs/teacher.py:fashion_mnist --workdir=runs/fmnist_teacher
    python -m experiments.fashion_mnist --config=configs/fmnist_lenet5_hidfd.py --workdir=runs/fmnist_hidfd600
"""

import ml_collections

from configs import common, hidfd


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = hidfd.base()
    c.dataset = "fashion_mnist"
    c.teacher_dir = "runs/fmnist_teacher"
    c.teacher, c.student = "lenet5_bn", "lenet5_half"
    c.train_examples = 600
    # The DDAD protocol's generator size (configs/fmnist_lenet5.py), a critic of the same scale.
    c.generator_channels, c.latent_dim, c.discriminator_width = 16, 100, 16
    c.batch_size = 128
    c.gan_iterations = 2000
    # Inflation 10 x 600 real against 6 000 generated: half of every batch is real, as in the
    # reference's 10 x 5 000 against 50 000.
    c.synthetic_images = 6000
    c.student_iterations = 2000
    # The KD protocol's student recipe (configs/fmnist_lenet5_kd.py): Adam 1e-3, cosine.
    c.optimizer, c.learning_rate, c.momentum, c.weight_decay = "adam", 1e-3, 0.9, 0.0
    c.iters_per_epoch = 250
    c.log_every = 50
    c.sample_grid = 100
    return common.protocol(c, arg, "configs/fmnist_lenet5_hidfd.py")
