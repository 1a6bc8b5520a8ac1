"""What every config shares: one argument grammar, the fields every run has, one smoke size.

The argument after a config file's colon is ``DATASET[,PAIR][,smoke]`` for a method's base
(``configs/ddad.py:fashion_mnist,smoke``, ``configs/fast.py:cifar10,wrn40_2-wrn16_1``) and
``[smoke]`` for a protocol file (``configs/fmnist_lenet5.py:smoke``):

* ``DATASET``: fashion_mnist, cifar10, cifar100, caltech101, or a dataset of your own prepared with
  ``python -m ddad_jax.data.prepare`` (it gets the CIFAR protocol);
* ``PAIR``: one of the data-free CIFAR tables' teacher-student pairs (``PAIRS``), for the
  configs that take one;
* ``smoke``: the same run shrunk to seconds (``smoke``: tests, a first try).
"""

import importlib
import re
from typing import Dict, NamedTuple, Optional, Sequence

import ml_collections

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "caltech101")
PAIRS = ("resnet34-resnet18", "wrn40_2-wrn16_1", "wrn40_2-wrn16_2", "wrn40_2-wrn40_1")


class Arg(NamedTuple):
    dataset: Optional[str]  # None for a protocol file's argument
    pair: Optional[str]
    smoke: bool


def parse_arg(arg: str, config: str, default_dataset: Optional[str] = None, pairs: Sequence[str] = ()) -> Arg:
    """``DATASET[,PAIR][,smoke]`` (``default_dataset`` given: a method's base) or ``[smoke]``
    (a protocol file); ``ValueError`` naming ``config`` and what it takes for anything else."""
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    dataset = None
    if default_dataset is not None:
        dataset = parts.pop(0) if parts and parts[0] != "smoke" and parts[0] not in pairs else default_dataset
        if not re.match(r"[a-z][a-z0-9_]*$", dataset):
            raise ValueError(f"{config}: '{dataset}' is not a dataset name ({', '.join(DATASETS)} or one of your own, "
                             "prepared with python -m ddad_jax.data.prepare)")
    options = set(parts)
    chosen = options & set(pairs)
    unknown = options - set(pairs) - {"smoke"}
    if unknown or len(chosen) > 1:
        known = "smoke" + (f" and one of {', '.join(pairs)}" if pairs else "")
        raise ValueError(f"{config}: unknown option(s) {sorted(unknown or chosen)} (known: {known})")
    pair = chosen.pop() if chosen else (pairs[0] if pairs else None)
    return Arg(dataset, pair, "smoke" in options)


def run_fields(c: ml_collections.ConfigDict, kind: str, dataset: str) -> ml_collections.ConfigDict:
    """The fields every run has, at their defaults."""
    c.kind = kind
    c.dataset = dataset
    c.data_dir = ""  # '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.seed = 0
    c.num_devices = 0  # 0 = all visible devices
    c.cpu_devices = 4  # CPU-only hosts: split into gcd(this, batch_size) XLA devices (faster); 1 = off
    c.log_every = 10
    c.checkpoint_every = 0  # steps; 0 = at the end of every epoch
    c.eval_batch_size = 1000
    # -1 = the whole test split. A data-free run may take 0 (none: a user with only a teacher
    # may have no data); it then reports the student's top-1 agreement with the teacher on
    # generated images instead of test accuracy, as it does when the split is not prepared.
    c.eval_examples = -1
    return c


def distillation_fields(c: ml_collections.ConfigDict, teacher: str, student: str) -> ml_collections.ConfigDict:
    """A distillation run's networks: the teacher comes from a configs/teacher.py run's workdir."""
    c.teacher_dir = ""
    c.teacher, c.student = teacher, student
    return c


# One smoke size for every config: each field is set where the config has it. A smoke run
# executes every part of the real one (fine-tuning, warm-up, pool, contrast bank) once or twice.
SMOKE = {
    "batch_size": 16, "num_epochs": 2, "iters_per_epoch": 2, "steps_per_epoch": 2, "log_every": 1,
    "eval_examples": 64, "eval_batch_size": 32, "sample_grid": 16, "generator_channels": 8, "latent_dim": 16,
    "lr_milestones": (1,), "time_budget_s": 0.0, "student_steps_per_generator_step": 2,
    "synthesis_steps": 2, "student_steps_per_round": 2, "contrast_bank_size": 64, "contrast_negatives": 16,
    "contrast_head_dim": 16, "gan_iterations": 2, "student_iterations": 2, "discriminator_width": 8,
}
# Where a kind of run shrinks otherwise: a teacher needs a few more steps to be a teacher at all.
SMOKE_BY_KIND = {"teacher": {"num_epochs": 1, "steps_per_epoch": 4, "log_every": 2}}
SMOKE_AT_MOST = {"finetune_epochs": 1, "warmup_rounds": 1}  # kept when already smaller (0 = off)


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``c`` shrunk to seconds; CIFAR-sized networks become the smallest WRN."""
    for name, value in {**SMOKE, **SMOKE_BY_KIND.get(c.kind, {})}.items():
        if name in c:
            c[name] = value
    for name, most in SMOKE_AT_MOST.items():
        if name in c:
            c[name] = min(c[name], most)
    if c.kind == "hidfd":
        c.train_examples = 200 if c.dataset == "cifar100" else 40  # every class at least twice
    if c.dataset != "fashion_mnist":
        for name in ("teacher", "student", "model"):
            if name in c:
                c[name] = "wrn16_1"
    return c


def finish(c: ml_collections.ConfigDict, smoke_it: bool) -> ml_collections.ConfigDict:
    return smoke(c) if smoke_it else c


def protocol(c: ml_collections.ConfigDict, arg: str, config: str) -> ml_collections.ConfigDict:
    """A protocol file's config ``c`` for its argument ``[smoke]``."""
    return finish(c, parse_arg(arg, config).smoke)


def from_protocols(method: str, protocols: Dict[str, str], arg: str, default: str) -> ml_collections.ConfigDict:
    """A method base's config for ``DATASET[,smoke]``: the protocol file ``protocols[DATASET]``
    (a dataset of your own gets ``default``'s), on that dataset."""
    parsed = parse_arg(arg, f"configs/{method}.py", default)
    c = importlib.import_module(f"configs.{protocols.get(parsed.dataset, protocols[default])}").get_config()
    c.dataset = parsed.dataset
    return finish(c, parsed.smoke)
