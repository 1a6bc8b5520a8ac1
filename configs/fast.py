"""Fast (Fang et al. 2022, FastDFKD): a generator initialisation meta-learned (first-order
MAML) so that a few steps per batch suffice, BN statistics with a momentum across batches,
cross-entropy toward drawn classes and the adversarial KL where teacher and student agree;
the student learns from the pool of every batch after a synthesis-only warm-up.

    python -m experiments.cifar10 --config=configs/fast.py:cifar10,wrn40_2-wrn16_1 --workdir=runs/c10_fast \\
        --config.teacher_dir=runs/c10_wrn40_2

CIFAR values: Fast-Datafree's "Fast-5" scripts (docs/reference/datafree_methods.md section 7):
5 inner steps, generator 3e-3 and latents 0.01 (Adam betas 0.5, 0.999), outer Adam at
3e-3 * 5, BN 10 with momentum 0.9, cross-entropy 0.5, adversarial 1.33 for ResNet-34 ->
ResNet-18 (cross-entropy 0.4 and adversarial 1.1 for the WRN pairs), 20 warm-up rounds, 220
rounds, student SGD 0.2 with KD at T = 20.
"""

import ml_collections

from configs import datafree


def config(dataset: str, pair: str) -> ml_collections.ConfigDict:
    c = datafree.inversion(datafree.common_fields(ml_collections.ConfigDict(), "inversion", dataset, pair))
    c.method = "fast"
    c.synthesizer = "meta_generator"
    c.synthesis_steps, c.synthesis_lr, c.latent_lr = 5, 3e-3, 0.01
    c.generator_lr = 3e-3 * 5
    c.bn_momentum = 0.9
    wrn = pair.startswith("wrn")
    c.generator_terms = ml_collections.ConfigDict({"bn": 10.0, "ce": 0.4 if wrn else 0.5,
                                                   "adversarial_agree": 1.1 if wrn else 1.33})
    c.warmup_rounds = 20
    c.num_epochs = 220  # rounds; the pool keeps every one (pool_size -1)
    c.student_lr = 0.2
    if dataset == "fashion_mnist":
        # sized to the data-free benchmark's 12 minutes on 2 CPU cores (docs/datafree.md, "Sizing")
        datafree.inversion_fashion_mnist(c, rounds=160, student_steps=25)
        c.generator_terms = ml_collections.ConfigDict({"bn": 10.0, "ce": 0.5, "adversarial_agree": 1.33})
        c.warmup_rounds = 5
    return c


def get_config(arg: str = "cifar10") -> ml_collections.ConfigDict:
    return datafree.get(config, "fast", arg)
