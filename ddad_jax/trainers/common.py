"""What every run's builder shares: the ``Run`` that ``loop.train`` drives, validation of
every config field before anything is written, the workdir identity, and small config helpers."""

import dataclasses
import json
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ddad_jax import config_fields, data, models, objectives, state as state_lib
from ddad_jax import teacher as teacher_lib
from ddad_jax.config_fields import Rule
from ddad_jax.errors import UserError
from ddad_jax.methods import ddad, hidfd, inversion
from ddad_jax.evaluation import EvalSet
from ddad_jax.trainers import sizes

# Fields that do not change a run's trajectory: they may differ when a run is resumed.
NOT_TRAJECTORY = frozenset({"data_dir", "teacher_dir", "num_devices", "cpu_devices", "log_every", "time_budget_s",
                            "checkpoint_every", "eval_batch_size", "eval_examples", "sample_grid"})


@dataclasses.dataclass
class Run:
    """A built run: ``loop.train`` steps ``state`` from its checkpointed step to ``total_steps``."""
    name: str  # 'teacher' or 'ddad': prefixes its progress lines
    state: Any  # fresh (host) state; a checkpoint restores into its shapes
    place: Callable[[Any], Any]  # host state -> state on the mesh, laid out for ``step``
    step: Callable[[int, Any], Any]  # (step number, state) -> (state, device metrics)
    total_steps: int
    steps_per_epoch: int  # evaluation (and by default checkpointing) every this many steps
    identity: Dict[str, Any]  # what must match to resume in a workdir
    evaluate: Callable[[Any], Dict[str, float]]  # state -> {"test/...": value}
    summarize: Callable[[Any, Dict[str, float], float], dict]  # (state, last evaluation, wall s)
    phase: Callable[[int], str] = lambda step: ""  # e.g. 'fine-tune ' for a step
    sample: Optional[Callable[[Any], Any]] = None  # state -> ([0, 1] images, teacher's classes) for a PNG grid
    class_names: Tuple[str, ...] = ()  # the grid's labels, when the dataset's names are known
    export: Optional[Callable[[str, Any, dict], None]] = None  # (workdir, state, summary): deliverables
    report: Callable[[dict], str] = lambda summary: ""  # the closing line, from the summary
    log_every: int = 10
    checkpoint_every: int = 0  # 0 = every epoch
    time_budget_s: float = 0.0  # > 0: stop (evaluate, summarise) once this many seconds have run


# ---------------------------------------------------------------------------------------------
# validation

_I = lambda low, high=None: Rule(int, low, high)  # noqa: E731
_F = lambda low, high=None, open_low=False: Rule(float, low, high, open_low)  # noqa: E731
_POS = _F(0.0, open_low=True)
_BOOL = Rule(choices=(True, False))
# The fields that no method's hyperparameter dataclass holds: what the trainers read themselves
# (schedules, epochs, reporting, networks). The others are declared, once, beside the
# hyperparameter they set (methods.ddad.DDADHyper, methods.inversion.InversionHyper,
# methods.hidfd.HiDFDHyper, objectives.KDParams).
RUN_FIELDS: Dict[str, Rule] = {
    "seed": _I(0), "num_devices": _I(0), "cpu_devices": _I(1), "num_epochs": _I(1), "iters_per_epoch": _I(1),
    "steps_per_epoch": _I(-1), "generator_channels": _I(1), "finetune_epochs": _I(0), "log_every": _I(1),
    "checkpoint_every": _I(0), "eval_batch_size": _I(1), "eval_examples": _I(-1), "sample_grid": _I(0, 1024),
    "train_examples": _I(-1), "gan_iterations": _I(1), "student_iterations": _I(1), "inflation": _I(0),
    "synthetic_images": _I(0), "discriminator_width": _I(1), "warmup_rounds": _I(0), "contrast_bank_size": _I(1),
    "learning_rate": _POS, "student_lr": _POS, "generator_lr": _POS, "finetune_lr": _POS, "gan_lr": _POS,
    "momentum": _F(0.0, 1.0), "student_momentum": _F(0.0, 1.0), "weight_decay": _F(0.0),
    "student_weight_decay": _F(0.0), "lr_gamma": _F(0.0), "time_budget_s": _F(0.0),
    "pool_pixels": _BOOL, "optimizer": Rule(choices=("sgd", "adam")), "student_optimizer": Rule(choices=("sgd", "adam")),
    "schedule": Rule(choices=state_lib.SCHEDULES), "lr_schedule": Rule(choices=state_lib.SCHEDULES),
    "generator_lr_schedule": Rule(choices=("", *state_lib.SCHEDULES)),
    "compute_dtype": Rule(choices=("float32", "bfloat16")), "generator_arch": Rule(choices=tuple(models.GENERATORS)),
    "finetune_objective": Rule(choices=tuple(objectives.STUDENT_OBJECTIVES)),
}
FIELD_RULES = config_fields.rules((ddad.DDADHyper, inversion.InversionHyper, hidfd.HiDFDHyper, objectives.KDParams),
                                  RUN_FIELDS)


def validate(config) -> None:
    """Every known field of ``config`` within its range or among its choices, and the
    generator terms known, with known parameters in range."""
    for name, rule in FIELD_RULES.items():
        if name in config:
            rule.check(name, config[name])
    if config.get("kind") in ("ddad", "inversion"):
        used = {config.student_objective, config.get("finetune_objective", config.student_objective)}
        for name in sorted(used & objectives.NEEDS_LABELS):
            raise UserError(f"student objective '{name}' needs labels, and a data-free run has none; use one of "
                            f"{', '.join(sorted(set(objectives.STUDENT_OBJECTIVES) - objectives.NEEDS_LABELS))}")
    if "generator_terms" in config:
        names = objectives.term_names(objectives.parse_terms(config.generator_terms))
        if not names:
            raise UserError("generator_terms has no term with a non-zero weight")
        if names & objectives.NEEDS_CONTRAST and config.get("kind") != "inversion":
            raise UserError("generator term 'contrastive' (CMI) needs a synthesis round with a memory bank: "
                            "use configs/cmi.py (kind 'inversion')")


def resolved_pool_size(config) -> int:
    """The pool's slots: ``config.pool_size``, where -1 ("every batch") is resolved to the
    run's adversarial iterations (DDAD) or rounds (inversion methods), ``num_epochs *
    iters_per_epoch`` -- here, so that an override of either is followed."""
    return config.num_epochs * config.iters_per_epoch if config.pool_size == -1 else config.pool_size


def require_batchnorm(teacher_vars, terms, teacher: str,
                      remedy: str = "use a BN teacher (e.g. lenet5_bn) or set --config.generator_terms.bn=0 "
                                    "(the adversarial game alone, as DFAD)") -> None:
    """The ``bn`` term matches the teacher's BatchNorm statistics: a teacher without them is
    refused when ``terms`` (``objectives.Term``s) use it."""
    if "bn" in objectives.term_names(terms) and not teacher_vars.get("batch_stats"):
        raise UserError(f"teacher '{teacher}' has no BatchNorm layers, so the 'bn' generator term has nothing to "
                        f"match; {remedy}")


def identity(config, **extra) -> Dict[str, Any]:
    """The fields that fix a run's trajectory, plus ``extra`` (e.g. the teacher's fingerprint),
    as JSON has them (tuples become lists), so they compare equal to a recorded ``run.json``."""
    return json.loads(json.dumps({**{k: v for k, v in config.to_dict().items() if k not in NOT_TRAJECTORY}, **extra}))


def compute_dtype(config):
    """The networks' compute dtype: with bfloat16, convolutions and matmuls run in bf16 while
    parameters, optimiser state, BatchNorm statistics and every loss stay float32."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.get("compute_dtype", "float32")]


def generator_arch(config) -> str:
    """The run's generator architecture (``models.GENERATORS``); 'dafl' for configs without one."""
    return config.get("generator_arch", "dafl")


def make_generator(config, spec: data.DatasetSpec, bn_axis_name=None, dtype=jnp.float32):
    """The run's generator for ``spec``'s images: ``generator_arch`` with ``generator_channels``."""
    return models.get_generator(config.generator_channels, spec.image_size, spec.channels, bn_axis_name=bn_axis_name,
                                dtype=dtype, arch=generator_arch(config))


def dataset_spec(config) -> data.DatasetSpec:
    """The run's dataset, preprocessed as its teacher was trained: a built-in one, a custom
    one's card in ``data_dir`` or, for a run with a teacher and no data at all, the spec the
    teacher's card carries. A teacher card's preprocessing (size, resize or pad, mean, std:
    ``import_teacher --resize --mean --std``) wins over the dataset's own."""
    from_card = teacher_lib.card_spec(config.get("teacher_dir", ""), config.dataset)
    try:
        spec = data.get_spec(config.dataset, config.data_dir or None)
    except UserError:
        if from_card is None:
            raise
        return from_card
    if from_card is None:
        return spec
    if (from_card.source_size, from_card.channels, from_card.num_classes) != \
            (spec.source_size, spec.channels, spec.num_classes):
        raise UserError(f"the teacher in {config.teacher_dir} was trained on {from_card.source_size}x"
                        f"{from_card.source_size}x{from_card.channels} images of {from_card.num_classes} classes, "
                        f"but dataset '{spec.name}' has {spec.source_size}x{spec.source_size}x{spec.channels} "
                        f"images of {spec.num_classes}")
    return data.with_preprocessing(spec, from_card.image_size, from_card.resize, from_card.mean, from_card.std)


def eval_set(config, spec, mesh, optional: bool = False, evaluated: Optional[Dict[str, Any]] = None) -> Optional[EvalSet]:
    """The test split, placed for ``evaluation.evaluate``. ``optional`` (data-free runs): None
    when ``eval_examples`` is 0 or the split is not prepared -- the run then reports the
    student's agreement with the teacher on generated images instead (``no_eval_reason``).
    ``evaluated``: the networks evaluated on it ({name: model}), whose activations for one
    evaluation chunk are checked against the memory there is (``sizes.check_eval_memory``)
    before anything compiles."""
    if optional and no_eval_reason(config, spec):
        return None
    if config.eval_examples == 0:
        raise UserError("eval_examples = 0 (no evaluation) is for data-free runs; this run evaluates on the test "
                        "split: use -1 (all of it) or a number of examples")
    test_x, test_y = data.load_split(spec, "test", config.data_dir or None,  # this host's share of them
                                     num_examples=config.eval_examples if config.eval_examples > 0 else None)
    if evaluated:
        shape = (spec.image_size, spec.image_size, spec.channels)
        sizes.check_eval_memory(config.eval_batch_size, len(test_x), mesh, {
            name: (model, shape, {"train": False}) for name, model in evaluated.items()})
    return EvalSet.build(test_x, test_y, spec, config.eval_batch_size, mesh)


def no_eval_reason(config, spec) -> str:
    """Why a run has no test split to evaluate on ('' when it has one)."""
    if config.eval_examples == 0:
        return "eval_examples = 0"
    splits = data.prepared_splits(spec, config.data_dir or None)
    where = config.data_dir or data.default_data_dir()
    if not splits:
        return f"'{spec.name}' is not prepared in {where}"
    if "test" not in splits:
        return f"'{spec.name}' has no test split in {where}"
    return ""


def teacher_line(config, spec, teacher_acc: Optional[float]) -> str:
    """What a distillation run says about its teacher before it starts."""
    said = f"test accuracy {teacher_acc:.4f}" if teacher_acc is not None else (
        f"{no_eval_reason(config, spec)}: the student's agreement with the teacher on generated images "
        "is reported instead of test accuracy")
    return f"teacher {config.teacher} from {config.teacher_dir}: {said}"


def student_result(summary: dict) -> str:
    """A distillation summary's result for its closing line: test accuracy, or agreement."""
    if summary.get("student_acc") is not None:
        return f"test accuracy {summary['student_acc']:.4f}"
    return f"agreement with the teacher on generated images {summary['student_agreement']:.4f}"


def teacher_result(summary: dict) -> str:
    """'resnet34 0.9512', or the teacher's name alone when there was no test split."""
    acc = summary.get("teacher_acc")
    return summary["teacher"] + (f" {acc:.4f}" if acc is not None else "")


def eval_summary(last_eval: Dict[str, float]) -> dict:
    """The summary's result keys: ``student_acc`` (None without a test split) and, without
    one, ``student_agreement``."""
    out = {"student_acc": last_eval.get("test/student_accuracy")}
    if AGREEMENT in last_eval:
        out["student_agreement"] = last_eval[AGREEMENT]
    return out


# Without a test split: top-1 agreement of student and teacher on generated images.
AGREEMENT = "generated/student_agreement"


def kd_params(config) -> objectives.KDParams:
    """The student objective's hyperparameters, from the config's fields of the same meaning
    (a field a config does not have keeps ``KDParams``' default)."""
    return config_fields.from_config(objectives.KDParams, config)


def train_subset(config, spec, train_y) -> np.ndarray:
    """Indices of the training examples a run may read: all, or ``train_examples`` drawn
    class-balanced with the run's seed (KD on a few images, HiDFD)."""
    if config.train_examples < 0:
        return np.arange(len(train_y))
    if config.train_examples == 0:
        raise UserError("train_examples must be -1 (all) or > 0, got 0")
    return data.balanced_subset(train_y, config.train_examples, config.seed, spec.num_classes)


def grid_sampler(generator, teacher_model, teacher_vars, spec, z):
    """``state -> ([0, 1] images, the teacher's class of each)`` for the sample grid: the
    generator (in ``state.generator``) on the fixed latents ``z``, compiled once, outside the
    data-parallel map."""
    gen = generator.clone(bn_axis_name=None)
    teacher = teacher_model.clone(bn_axis_name=None)

    @jax.jit
    def draw(gen_vars, t_vars):
        x = gen.apply(gen_vars, z, train=True, mutable=["batch_stats"])[0]
        return data.denormalize(x, spec), jnp.argmax(teacher.apply(t_vars, x), -1)

    return lambda state: jax.device_get(draw(state_lib.variables_of(state.generator), teacher_vars))


# Without a test split the student is scored on this many generator batches (1024 images at
# batch 128): one batch alone moves in steps of 1/128 and by several points between epochs.
AGREEMENT_BATCHES = 8


def generator_agreement(generator, teacher_model, teacher_vars, student, z):
    """``state -> float``: the share of the generator's images (in ``state.generator``) from the
    fixed latents ``z`` (``(batches, batch, latent)``, one generator call a batch, as in
    training) on which the student's top-1 class (``state.student``, inference mode) is the
    teacher's -- what a run without a test split reports. The images follow the generator as
    it trains; the latents stay fixed. Compiled once, outside the data-parallel map."""
    gen, teacher, student = (m.clone(bn_axis_name=None) for m in (generator, teacher_model, student))

    @jax.jit
    def agree(gen_vars, t_vars, s_vars):
        def one(zb):
            x = gen.apply(gen_vars, zb, train=True, mutable=["batch_stats"])[0]
            return jnp.mean(jnp.argmax(student.apply(s_vars, x, train=False), -1) == jnp.argmax(teacher.apply(t_vars, x), -1))
        return jnp.mean(jax.lax.map(one, z))

    return lambda state: float(agree(state_lib.variables_of(state.generator), teacher_vars,
                                     state_lib.variables_of(state.student)))
