"""DDAD on Caltech101: ResNet-34 -> ResNet-18 at 128x128 with DFAD's protocol (for a GPU or TPU host).

    python -m ddad_jax.data.prepare caltech101   # tfds download once, then DFAD's split and crops
    python -m experiments.caltech101 --config=configs/teacher.py:caltech101 --workdir=runs/caltech101_resnet34
    python -m experiments.caltech101 --config=configs/caltech101_resnet34_resnet18.py \\
        --workdir=runs/caltech101_ddad_resnet18 --config.teacher_dir=runs/caltech101_resnet34
    python -m experiments.caltech101 --config=configs/dfad.py:caltech101 --workdir=runs/caltech101_dfad \\
        --config.teacher_dir=runs/caltech101_resnet34

A PyTorch teacher trained as DFAD's ``train_teacher.py`` trains it (torchvision's resnet34,
101 classes) imports with ``python -m ddad_jax.import_teacher --model=resnet34_imagenet
--dataset=caltech101 ...``. Not measured here: Caltech101 cannot be downloaded on the
project's machine; the code path runs on stand-in data in the tests.
"""

import ml_collections

from configs import common, ddad


def caltech101(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """DFAD's Caltech101 protocol (``DFAD_caltech101.py``), which DDAD's paper follows: torchvision's
    ResNet-34 teacher, ResNet-18 student, DFAD's transposed-convolution generator for 128x128
    (latent 256), batch 64, 300 epochs of 50 iterations with 5 student steps per generator step,
    student SGD 0.1 (momentum 0.9, weight decay 5e-4), generator Adam 1e-3, both x0.1 at
    epochs 100 and 200."""
    c.dataset = "caltech101"
    c.teacher, c.student = "resnet34_imagenet", "resnet18_imagenet"
    c.generator_arch, c.generator_channels, c.latent_dim = "dfad_large", 64, 256
    c.batch_size = 64
    c.num_epochs, c.iters_per_epoch = 300, 50
    c.student_steps_per_generator_step = 5
    c.student_optimizer, c.student_lr, c.student_momentum, c.student_weight_decay = "sgd", 0.1, 0.9, 5e-4
    c.generator_lr = 1e-3
    c.lr_schedule, c.generator_lr_schedule = "step", ""
    c.lr_milestones, c.lr_gamma = (100, 200), 0.1
    return c


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = caltech101(ddad.base())
    c.sample_grid = 16  # 128x128 images: a 4x4 grid
    return common.protocol(c, arg, "configs/caltech101_resnet34_resnet18.py")
