"""DeepInversion (Yin et al. 2020): each batch of images optimised directly, from noise, to
match the teacher's BN statistics and classify as drawn classes, with an image prior and the
adaptive competition against the student (Jensen-Shannon); the student learns from the pool.

    python -m experiments.cifar10 --config=configs/deepinversion.py:cifar10 --workdir=runs/c10_di \\
        --config.teacher_dir=runs/c10_resnet34

CIFAR values: the CMI/Fast-Datafree code base's DeepInversion (docs/reference/datafree_methods.md
section 4.1): 1 000 Adam steps at 0.1 (betas 0.5, 0.99) per batch, BN 10, cross-entropy 1,
competition 1, total variation 0.001 (the CMI repository's; Fast-Datafree's is 0), pixels
kept in the image range.
"""

import ml_collections

from configs import datafree


def config(dataset: str, pair: str) -> ml_collections.ConfigDict:
    c = datafree.inversion(datafree.common_fields(ml_collections.ConfigDict(), "inversion", dataset, pair))
    c.method = "deepinversion"
    c.synthesizer = "pixels"
    c.synthesis_steps, c.synthesis_lr = 1000, 0.1
    # the competition term at the reference code's temperature 3 (a term's parameters sit beside its weight)
    c.generator_terms = ml_collections.ConfigDict({"bn": 10.0, "ce": 1.0, "tv": 0.001,
                                                   "adversarial_js": {"weight": 1.0, "temperature": 3.0}})
    if dataset == "fashion_mnist":
        # the CIFAR learning rate with half its steps, chosen on the synthesis loss after a round
        # (a training signal, not test accuracy); sized to the data-free benchmark's 12 minutes on 2 CPU cores (docs/datafree.md, "Sizing")
        datafree.inversion_fashion_mnist(c, rounds=40, student_steps=25)
        c.synthesis_steps, c.synthesis_lr = 500, 0.1
    return c


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    return datafree.get(config, "deepinversion", arg)
