"""DFAD (Fang et al. 2019): a generator that maximises the student-teacher L1 discrepancy, a
student that minimises it -- DDAD without the BN-statistics discriminator.

    python -m experiments.cifar10 --config=configs/dfad.py:cifar10 --workdir=runs/c10_dfad \\
        --config.teacher_dir=runs/c10_resnet34

CIFAR values: DFAD's own CIFAR recipe (docs/reference/datafree_methods.md section 3.3), which
is also ``configs/ddad.py``'s base. Fashion-MNIST: DFAD's MNIST LeNet-5 setting.
"""

import ml_collections

from configs import datafree, ddad


def config(dataset: str, pair: str) -> ml_collections.ConfigDict:
    c = datafree.common_fields(ddad.base(), "ddad", dataset, pair)
    c.method = "dfad"
    c.generator_terms = ml_collections.ConfigDict({"adversarial": 1.0})
    if dataset == "fashion_mnist":
        datafree.fashion_mnist(c)
        # DFAD's MNIST: student SGD 0.01 (momentum 0.9, weight decay 1e-4), generator Adam 1e-3,
        # no schedule.
        # sized to the data-free benchmark's 12 minutes on 2 CPU cores (docs/datafree.md, "Sizing")
        c.student_lr, c.student_weight_decay, c.lr_schedule = 0.01, 1e-4, "constant"
        c.num_epochs, c.iters_per_epoch = 110, 25
    elif dataset == "caltech101":
        from configs import caltech101_resnet34_resnet18  # pylint: disable=import-outside-toplevel
        caltech101_resnet34_resnet18.caltech101(c)  # DFAD's own Caltech101 protocol
    return c


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    return datafree.get(config, "dfad", arg)
