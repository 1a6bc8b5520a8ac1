"""CMI (Fang et al. 2021), contrastive model inversion: a generator initialised afresh for each
batch, optimised with its latents for BN statistics, cross-entropy toward drawn classes, the
adversarial KL where teacher and student agree, and instance discrimination against a memory
bank of past syntheses (``objectives/contrastive.py``); the student learns from the pool of
every batch.

    python -m experiments.cifar10 --config=configs/cmi.py:cifar10,wrn40_2-wrn16_1 --workdir=runs/c10_cmi \\
        --config.teacher_dir=runs/c10_wrn40_2

CIFAR values: the CMI repository's CIFAR-10 script (docs/reference/datafree_methods.md section
6): 200 Adam steps at 1e-3 (betas 0.5, 0.999) for generator and latents, BN 1, cross-entropy
1, adversarial 0.5, contrastive 0.8 at temperature 0.2 with a 256-wide head, a bank of
40 960 images' features and 4 096 negatives a round. Simplification: the batch kept each round
is the last inner step's, not the lowest-loss one's.
"""

import ml_collections

from configs import datafree


def config(dataset: str, pair: str) -> ml_collections.ConfigDict:
    c = datafree.inversion(datafree.common_fields(ml_collections.ConfigDict(), "inversion", dataset, pair))
    c.method = "cmi"
    c.synthesizer = "reinit_generator"
    c.synthesis_steps = 200
    c.generator_terms = ml_collections.ConfigDict({"bn": 1.0, "ce": 1.0, "adversarial_agree": 0.5,
                                                   "contrastive": 0.8})
    if dataset == "fashion_mnist":
        datafree.inversion_fashion_mnist(c, rounds=60, student_steps=25)
        c.synthesis_steps = 20
        # every round's features fit the bank; fewer negatives a round and a narrower head for
        # LeNet's 226-wide instance features on a CPU
        c.contrast_bank_size, c.contrast_negatives, c.contrast_head_dim = 8192, 512, 128
    return c


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    return datafree.get(config, "cmi", arg)
