"""Config -> everything a run needs, validated before anything is written to disk.

``build(config)`` checks every field's range, loads the teacher and the data, creates the
networks, states and jitted steps, and returns a ``Run``: what ``loop.train`` drives. A
config a run cannot use fails here, as one ``UserError`` line, with the workdir untouched.
"""

import dataclasses
import json
import math
import os
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ddad_jax import augment, checkpoints, data, models, objectives, parallel, state as state_lib, synthesis
from ddad_jax import teacher as teacher_lib
from ddad_jax.errors import UserError
from ddad_jax.evaluation import EvalSet, evaluate
from ddad_jax.methods import ddad, hidfd, kd
from ddad_jax.models import gan as gan_models

# Fields that do not change a run's trajectory: they may differ when a run is resumed.
NOT_TRAJECTORY = frozenset({"data_dir", "teacher_dir", "num_devices", "cpu_devices", "log_every",
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
    sample: Optional[Callable[[Any], np.ndarray]] = None  # state -> [0, 1] images for a PNG grid
    export: Optional[Callable[[str, Any, dict], None]] = None  # (workdir, state, summary): deliverables
    report: Callable[[dict], str] = lambda summary: ""  # the closing line, from the summary
    log_every: int = 10
    checkpoint_every: int = 0  # 0 = every epoch


# ---------------------------------------------------------------------------------------------
# validation

_INT, _FLOAT = "int", "float"
# field: (type, smallest allowed, largest allowed); None = unbounded
_RANGES = {
    "seed": (_INT, 0, None), "num_devices": (_INT, 0, None), "cpu_devices": (_INT, 1, None),
    "batch_size": (_INT, 1, None), "num_epochs": (_INT, 1, None), "iters_per_epoch": (_INT, 1, None),
    "steps_per_epoch": (_INT, -1, None), "student_steps_per_generator_step": (_INT, 1, None),
    "latent_dim": (_INT, 1, None), "generator_channels": (_INT, 1, None), "pool_size": (_INT, 0, None),
    "finetune_epochs": (_INT, 0, None), "log_every": (_INT, 1, None), "checkpoint_every": (_INT, 0, None),
    "eval_batch_size": (_INT, 1, None), "eval_examples": (_INT, -1, None), "sample_grid": (_INT, 0, 1024),
    "learning_rate": (_FLOAT, 0.0, None), "student_lr": (_FLOAT, 0.0, None), "generator_lr": (_FLOAT, 0.0, None),
    "finetune_lr": (_FLOAT, 0.0, None), "momentum": (_FLOAT, 0.0, 1.0), "student_momentum": (_FLOAT, 0.0, 1.0),
    "weight_decay": (_FLOAT, 0.0, None), "student_weight_decay": (_FLOAT, 0.0, None),
    "lr_gamma": (_FLOAT, 0.0, None), "temperature": (_FLOAT, 0.0, None), "train_examples": (_INT, -1, None),
    "kd_alpha": (_FLOAT, 0.0, 1.0), "dtd_beta": (_FLOAT, 0.0, None), "dtd_gamma": (_FLOAT, 0.0, None),
    "dtd_min_temperature": (_FLOAT, 0.0, None), "attention_weight": (_FLOAT, 0.0, None),
    "scratch_weight": (_FLOAT, 0.0, None), "mixup_alpha": (_FLOAT, 0.0, None),
    "gan_iterations": (_INT, 1, None), "student_iterations": (_INT, 1, None), "inflation": (_INT, 0, None),
    "synthetic_images": (_INT, 0, None), "discriminator_width": (_INT, 1, None), "adc_weight": (_FLOAT, 0.0, None),
    "feature_weight": (_FLOAT, 0.0, None), "balance_weight": (_FLOAT, 0.0, None),
    "count_momentum": (_FLOAT, 0.0, 1.0), "effective_beta": (_FLOAT, 0.0, 0.999999), "gan_lr": (_FLOAT, 0.0, None),
}
_POSITIVE = frozenset({"learning_rate", "student_lr", "generator_lr", "finetune_lr", "temperature", "gan_lr",
                       "dtd_min_temperature", "mixup_alpha"})  # > 0, not >= 0
_CHOICES = {
    "optimizer": ("sgd", "adam"), "student_optimizer": ("sgd", "adam"), "schedule": state_lib.SCHEDULES,
    "lr_schedule": state_lib.SCHEDULES, "generator_lr_schedule": ("", *state_lib.SCHEDULES),
    "compute_dtype": ("float32", "bfloat16"), "student_objective": tuple(objectives.STUDENT_OBJECTIVES),
    "finetune_objective": tuple(objectives.STUDENT_OBJECTIVES),
}


def validate(config) -> None:
    """Every known field of ``config`` within its range or among its choices."""
    for name, (kind, lo, hi) in _RANGES.items():
        if name not in config:
            continue
        value = config[name]
        ok_type = isinstance(value, int) if kind == _INT else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or (kind == _FLOAT and not math.isfinite(value)):
            raise UserError(f"{name} must be a{'n integer' if kind == _INT else ' finite number'}, got {value!r}")
        low_ok = value > lo if name in _POSITIVE else value >= lo
        if not low_ok or (hi is not None and value > hi):
            bound = f"> {lo}" if name in _POSITIVE else f">= {lo}"
            raise UserError(f"{name} must be {bound}{'' if hi is None else f' and <= {hi}'}, got {value!r}")
    for name, choices in _CHOICES.items():
        if name in config and config[name] not in choices:
            raise UserError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {config[name]!r}")
    if config.get("kind") == "ddad":
        for name in sorted({config.student_objective, config.finetune_objective} & objectives.NEEDS_LABELS):
            raise UserError(f"student objective '{name}' needs labels, and a data-free run has none; use one of "
                            f"{', '.join(sorted(set(objectives.STUDENT_OBJECTIVES) - objectives.NEEDS_LABELS))}")
    if "generator_terms" in config:
        terms = dict(config.generator_terms)
        unknown = sorted(set(terms) - set(objectives.GENERATOR_TERMS))
        if unknown:
            raise UserError(f"unknown generator term '{unknown[0]}' (known: {', '.join(objectives.GENERATOR_TERMS)})")
        if not any(terms.values()):
            raise UserError("generator_terms has no term with a non-zero weight")
        for name, weight in terms.items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
                raise UserError(f"generator_terms.{name} must be a finite weight >= 0, got {weight!r}")


def identity(config, **extra) -> Dict[str, Any]:
    """The fields that fix a run's trajectory, plus ``extra`` (e.g. the teacher's fingerprint),
    as JSON has them (tuples become lists), so they compare equal to a recorded ``run.json``."""
    return json.loads(json.dumps({**{k: v for k, v in config.to_dict().items() if k not in NOT_TRAJECTORY}, **extra}))


def compute_dtype(config):
    """The networks' compute dtype: with bfloat16, convolutions and matmuls run in bf16 while
    parameters, optimiser state, BatchNorm statistics and every loss stay float32."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.get("compute_dtype", "float32")]


def _eval_set(config, spec, mesh) -> EvalSet:
    test_x, test_y = data.load_split(spec, "test", config.data_dir or None)
    if config.eval_examples > 0:
        test_x, test_y = test_x[:config.eval_examples], test_y[:config.eval_examples]
    return EvalSet.build(test_x, test_y, spec, config.eval_batch_size, mesh)


def kd_params(config) -> objectives.KDParams:
    """The student objective's hyperparameters, from the config's fields of the same meaning
    (a field a config does not have keeps ``KDParams``' default)."""
    fields = {"temperature": "temperature", "alpha": "kd_alpha", "dtd_beta": "dtd_beta", "dtd_gamma": "dtd_gamma",
              "dtd_min_temperature": "dtd_min_temperature", "attention_weight": "attention_weight",
              "scratch_weight": "scratch_weight", "mixup_alpha": "mixup_alpha"}
    return objectives.KDParams(**{k: float(config[f]) for k, f in fields.items() if f in config})


def build(config) -> Run:
    """The run ``config.kind`` asks for."""
    builders = {"teacher": build_teacher, "ddad": build_ddad, "kd": build_kd, "hidfd": build_hidfd}
    if config.get("kind") not in builders:
        raise UserError(f"config kind must be one of {', '.join(builders)}, got {config.get('kind')!r}")
    validate(config)
    return builders[config.kind](config)


# ---------------------------------------------------------------------------------------------
# supervised teacher training

def build_teacher(config) -> Run:
    spec = data.get_spec(config.dataset)
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    model = models.get_classifier(config.model, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS)
    train_x, train_y = data.load_split(spec, "train", config.data_dir or None)
    eval_set = _eval_set(config, spec, mesh)
    local_batch = config.batch_size // jax.process_count()
    steps_per_epoch = len(train_x) // local_batch
    if config.steps_per_epoch > 0:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    if steps_per_epoch < 1:
        raise UserError(f"batch_size={config.batch_size} is larger than the {len(train_x)} training examples")
    total = steps_per_epoch * config.num_epochs
    schedule = state_lib.make_schedule(config.schedule, config.learning_rate, total)
    tx = state_lib.make_optimizer(config.optimizer, schedule, config.momentum, config.weight_decay)
    rng = jax.random.key(config.seed)
    example = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))
    state = state_lib.create_state(model.clone(bn_axis_name=None), tx, jax.random.fold_in(rng, 0), example)
    state = state.replace(apply_fn=model.apply)
    train_step = teacher_lib.make_train_step(model, spec, mesh)
    order = {}  # the current epoch's example order, fixed by (seed, epoch)

    def step(n, state):
        epoch, i = divmod(n - 1, steps_per_epoch)
        if epoch not in order:
            order.clear()
            order[epoch] = list(data.epoch_batches(len(train_x), local_batch, config.seed, epoch))
        idx = order[epoch][i]
        return train_step(state, parallel.shard_batch(train_x[idx], mesh), parallel.shard_batch(train_y[idx], mesh),
                          jax.random.fold_in(rng, n))

    def summarize(state, last_eval, wall_s):
        return {"model": config.model, "dataset": config.dataset, "test_acc": last_eval["test/accuracy"],
                "test_examples": eval_set.num_examples, "epochs": config.num_epochs, "wall_s": wall_s}

    return Run(
        name="teacher", state=state, place=lambda s: parallel.replicate(s, mesh), step=step, total_steps=total,
        steps_per_epoch=steps_per_epoch, identity=identity(config),
        evaluate=lambda s: {"test/accuracy": evaluate(model, state_lib.variables_of(s), eval_set)},
        summarize=summarize, log_every=config.log_every,
        report=lambda s: f"{s['model']} on {s['dataset']}: test accuracy {s['test_acc']:.4f}; exported to "
                         f"{teacher_lib.TEACHER_SUBDIR}/ and {teacher_lib.TEACHER_META}",
        export=lambda workdir, s, summary: teacher_lib.export(workdir, state_lib.variables_of(s), summary))


# ---------------------------------------------------------------------------------------------
# DDAD

def hyper(config, num_classes: int) -> ddad.DDADHyper:
    terms = tuple((k, float(w)) for k, w in sorted(dict(config.generator_terms).items()) if w)
    return ddad.DDADHyper(
        generator_terms=terms, student_objective=config.student_objective, kd=kd_params(config),
        student_steps=config.student_steps_per_generator_step, batch_size=config.batch_size,
        latent_dim=config.latent_dim, pool_size=config.pool_size,
        num_classes=num_classes if any(k in objectives.NEEDS_TARGETS for k, _ in terms) else 0)


def student_schedule(config) -> optax.Schedule:
    """The student's learning rate per update: ``lr_schedule`` over the adversarial epochs,
    then, over ``finetune_epochs``, a cosine from ``finetune_lr`` to 0."""
    per_epoch = config.iters_per_epoch * config.student_steps_per_generator_step
    main = state_lib.make_schedule(config.lr_schedule, config.student_lr, config.num_epochs * per_epoch,
                                   [m * per_epoch for m in config.lr_milestones], config.lr_gamma)
    if not config.finetune_epochs:
        return main
    tail = optax.cosine_decay_schedule(config.finetune_lr, config.finetune_epochs * per_epoch)
    return optax.join_schedules([main, tail], [config.num_epochs * per_epoch])


def generator_schedule(config) -> optax.Schedule:
    per_epoch = config.iters_per_epoch
    return state_lib.make_schedule(config.generator_lr_schedule or config.lr_schedule, config.generator_lr,
                                   config.num_epochs * per_epoch, [m * per_epoch for m in config.lr_milestones],
                                   config.lr_gamma)


def create_ddad_state(config, hp: ddad.DDADHyper, spec, generator, student, rng) -> ddad.DDADState:
    """Fresh generator and student states (initialised outside the data-parallel map, where
    the ``batch`` axis does not exist yet) and an empty pool."""
    g_tx = state_lib.make_optimizer("adam", generator_schedule(config))
    s_tx = state_lib.make_optimizer(config.student_optimizer, student_schedule(config),
                                    config.student_momentum, config.student_weight_decay)
    image = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))
    g = state_lib.create_state(generator.clone(bn_axis_name=None), g_tx, jax.random.fold_in(rng, 1),
                               jnp.zeros((2, hp.latent_dim + hp.num_classes)))
    s = state_lib.create_state(student.clone(bn_axis_name=None), s_tx, jax.random.fold_in(rng, 2), image)
    pool = synthesis.init_pool(hp.pool_size, hp.batch_size, (spec.image_size, spec.image_size, spec.channels),
                               spec.num_classes)
    return ddad.DDADState(step=jnp.zeros((), jnp.int32), generator=g.replace(apply_fn=generator.apply),
                          student=s.replace(apply_fn=student.apply), pool=pool)


def place_ddad_state(state: ddad.DDADState, hp: ddad.DDADHyper, mesh) -> ddad.DDADState:
    """A host/checkpoint state on ``mesh`` with the layout ``ddad.make_iteration`` expects."""
    is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
    return jax.tree.map(lambda spec, x: jax.device_put(x, jax.sharding.NamedSharding(mesh, spec)),
                        ddad.state_spec(hp), state, is_leaf=is_spec)


def build_ddad(config) -> Run:
    spec = data.get_spec(config.dataset)
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    teacher_model, teacher_vars, teacher_meta = teacher_lib.load_teacher(
        config.teacher_dir, config.teacher, config.dataset, bn_axis_name=parallel.BATCH_AXIS)
    hp = hyper(config, spec.num_classes)
    if not teacher_vars.get("batch_stats") and any(k == "bn" for k, _ in hp.generator_terms):
        raise UserError(f"teacher '{config.teacher}' has no BatchNorm layers, so the 'bn' generator term has "
                        "nothing to match; use a BN teacher (e.g. lenet5_bn) or set --config.generator_terms.bn=0 "
                        "(adversarial only)")
    eval_set = _eval_set(config, spec, mesh)
    teacher_acc = evaluate(teacher_model, teacher_vars, eval_set)
    print(f"[ddad] teacher {config.teacher} from {config.teacher_dir}: test accuracy {teacher_acc:.4f}", flush=True)

    dtype = compute_dtype(config)
    generator = models.get_generator(config.generator_channels, spec.image_size, spec.channels,
                                     bn_axis_name=parallel.BATCH_AXIS, dtype=dtype)
    student = models.get_classifier(config.student, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS, dtype=dtype)
    student_f32 = student.clone(dtype=jnp.float32)  # evaluation always in float32
    rng = jax.random.key(config.seed)
    state = create_ddad_state(config, hp, spec, generator, student, rng)
    teacher_vars = parallel.replicate(teacher_vars, mesh)
    iteration = ddad.make_iteration(teacher_model.clone(dtype=dtype), hp, mesh)
    finetune = ddad.make_iteration(teacher_model.clone(dtype=dtype), dataclasses.replace(
        hp, student_objective=config.finetune_objective), mesh, adversarial=False) if config.finetune_epochs else None
    adversarial_total = config.num_epochs * config.iters_per_epoch
    total = (config.num_epochs + config.finetune_epochs) * config.iters_per_epoch

    # Sample grids are drawn outside the parallel map, compiled once.
    draw = jax.jit(lambda variables, z: generator.clone(bn_axis_name=None).apply(
        variables, z, train=True, mutable=["batch_stats"])[0])
    sample_z, _ = synthesis.draw_latents(jax.random.fold_in(rng, 3), hp.latent_dim, 0, (config.sample_grid,))
    if hp.num_classes:  # a conditional generator's grid goes through the classes in order
        sample_z = synthesis.with_classes(sample_z, jnp.arange(config.sample_grid) % hp.num_classes, hp.num_classes)

    def summarize(state, last_eval, wall_s):
        return {"method": "ddad", "dataset": config.dataset, "teacher": config.teacher,
                "teacher_dir": os.path.abspath(config.teacher_dir), "teacher_acc": teacher_acc,
                "teacher_acc_at_training": teacher_meta.get("test_acc"), "student": config.student,
                "student_acc": last_eval["test/student_accuracy"], "iterations": adversarial_total,
                "finetune_iterations": total - adversarial_total, "generator_terms": dict(hp.generator_terms),
                "student_objective": hp.student_objective, "pool_size": hp.pool_size, "wall_s": wall_s,
                "devices": mesh.size}

    return Run(
        name="ddad", state=state, place=lambda s: place_ddad_state(s, hp, mesh),
        step=lambda n, s: (iteration if n <= adversarial_total else finetune)(s, teacher_vars, rng),
        total_steps=total, steps_per_epoch=config.iters_per_epoch,
        identity=identity(config, teacher_fingerprint=checkpoints.variables_fingerprint(jax.device_get(teacher_vars))),
        evaluate=lambda s: {"test/student_accuracy": evaluate(student_f32, state_lib.variables_of(s.student), eval_set),
                            "test/teacher_accuracy": teacher_acc},
        summarize=summarize,
        report=lambda s: f"student {s['student']} test accuracy {s['student_acc']:.4f} "
                         f"(teacher {s['teacher']} {s['teacher_acc']:.4f})",
        phase=lambda n: "" if n <= adversarial_total else "fine-tune ",
        sample=(lambda s: jax.device_get(data.denormalize(draw(state_lib.variables_of(s.generator), sample_z), spec)))
        if config.sample_grid else None,
        log_every=config.log_every, checkpoint_every=config.checkpoint_every)


# ---------------------------------------------------------------------------------------------
# knowledge distillation on real images (all of a training set, or a few)

def train_subset(config, spec, train_y) -> np.ndarray:
    """Indices of the training examples a KD run may read: all, or ``train_examples`` drawn
    class-balanced with the run's seed."""
    if config.train_examples < 0:
        return np.arange(len(train_y))
    if config.train_examples == 0:
        raise UserError("train_examples must be -1 (all) or > 0, got 0")
    return data.balanced_subset(train_y, config.train_examples, config.seed, spec.num_classes)


def build_kd(config) -> Run:
    spec = data.get_spec(config.dataset)
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    hp = kd.KDHyper(student_objective=config.student_objective, kd=kd_params(config),
                    augment=teacher_lib.SUPERVISED_AUGMENT if spec.augment else augment.Augment())
    uses = hp.uses
    teacher_model = teacher_vars = None
    teacher_acc = None
    train_x, train_y = data.load_split(spec, "train", config.data_dir or None)
    keep = train_subset(config, spec, train_y)
    train_x, train_y = train_x[keep], train_y[keep]  # nothing else of the split is kept
    eval_set = _eval_set(config, spec, mesh)
    if uses["teacher"]:
        teacher_model, teacher_vars, _ = teacher_lib.load_teacher(config.teacher_dir, config.teacher, config.dataset)
        teacher_acc = evaluate(teacher_model, teacher_vars, eval_set)
        print(f"[kd] teacher {config.teacher} from {config.teacher_dir}: test accuracy {teacher_acc:.4f}", flush=True)
    steps_per_epoch = config.steps_per_epoch if config.steps_per_epoch > 0 else -(-len(train_x) // config.batch_size)
    total = steps_per_epoch * config.num_epochs
    rng = jax.random.key(config.seed)
    example = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))

    def fresh(model_name, index):
        model = models.get_classifier(model_name, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS)
        schedule = state_lib.make_schedule(config.schedule, config.learning_rate, total,
                                           [m * steps_per_epoch for m in config.lr_milestones], config.lr_gamma)
        tx = state_lib.make_optimizer(config.optimizer, schedule, config.momentum, config.weight_decay)
        ts = state_lib.create_state(model.clone(bn_axis_name=None), tx, jax.random.fold_in(rng, index), example)
        return model, ts.replace(apply_fn=model.apply)

    student, student_ts = fresh(config.student, 1)
    scratch, scratch_ts = fresh(config.teacher, 2) if uses["scratch"] else (None, None)
    state = kd.KDState(step=jnp.zeros((), jnp.int32), student=student_ts, scratch=scratch_ts)
    train_step = kd.make_step(hp, teacher_model, spec, mesh)
    teacher_vars = parallel.replicate(teacher_vars, mesh) if teacher_vars is not None else None
    local_batch = config.batch_size // jax.process_count()

    def step(n, state):
        idx = data.cycled_batch(len(train_x), local_batch, config.seed, n - 1)
        return train_step(state, teacher_vars, parallel.shard_batch(train_x[idx], mesh),
                          parallel.shard_batch(train_y[idx], mesh), rng)

    def evaluate_state(s):
        out = {"test/student_accuracy": evaluate(student, state_lib.variables_of(s.student), eval_set)}
        if s.scratch is not None:
            out["test/scratch_teacher_accuracy"] = evaluate(scratch, state_lib.variables_of(s.scratch), eval_set)
        return out

    def summarize(state, last_eval, wall_s):
        return {"method": "kd", "student_objective": config.student_objective, "dataset": config.dataset,
                "teacher": config.teacher if uses["teacher"] else None, "teacher_acc": teacher_acc,
                "student": config.student, "student_acc": last_eval["test/student_accuracy"],
                "train_examples": len(train_x), "steps": total, "wall_s": wall_s, "devices": mesh.size}

    fingerprint = checkpoints.variables_fingerprint(jax.device_get(teacher_vars)) if teacher_vars is not None else ""
    return Run(
        name="kd", state=state, place=lambda s: parallel.replicate(s, mesh), step=step, total_steps=total,
        steps_per_epoch=steps_per_epoch, identity=identity(config, teacher_fingerprint=fingerprint),
        evaluate=evaluate_state, summarize=summarize,
        report=lambda s: f"student {s['student']} ({s['student_objective']}, {s['train_examples']} real images) "
                         f"test accuracy {s['student_acc']:.4f}"
                         + (f" (teacher {s['teacher']} {s['teacher_acc']:.4f})" if s["teacher"] else ""),
        log_every=config.log_every, checkpoint_every=config.checkpoint_every)


# ---------------------------------------------------------------------------------------------
# HiDFD: a few real images and a teacher-guided GAN

def real_per_batch(config, num_real: int, num_devices: int) -> int:
    """Data inflation: the real images' share of a student batch, ``inflation * R`` real
    against ``synthetic_images`` generated ones, rounded to a multiple of the device count
    (at least one per device, at most all but one per device)."""
    share = config.inflation * num_real / max(config.inflation * num_real + config.synthetic_images, 1)
    per_device = round(share * config.batch_size / num_devices)
    return min(max(per_device, 1), config.batch_size // num_devices - 1) * num_devices


def build_hidfd(config) -> Run:
    spec = data.get_spec(config.dataset)
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    if config.batch_size < 2 * mesh.size:
        raise UserError(f"batch_size must be at least {2 * mesh.size} (a real and a generated image per device)")
    train_x, train_y = data.load_split(spec, "train", config.data_dir or None)
    keep = train_subset(config, spec, train_y)
    train_x, train_y = train_x[keep], train_y[keep]  # the few real images: nothing else of the split is kept
    eval_set = _eval_set(config, spec, mesh)
    teacher_model, teacher_vars, _ = teacher_lib.load_teacher(config.teacher_dir, config.teacher, config.dataset)
    teacher_acc = evaluate(teacher_model, teacher_vars, eval_set)
    print(f"[hidfd] teacher {config.teacher} from {config.teacher_dir}: test accuracy {teacher_acc:.4f}; "
          f"{len(train_x)} real images", flush=True)
    example = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))
    feature_dim = jax.eval_shape(lambda x: teacher_model.clone(penultimate=True).apply(teacher_vars, x), example).shape[-1]
    real_count = real_per_batch(config, len(train_x), mesh.size)
    hp = hidfd.HiDFDHyper(
        batch_size=config.batch_size, real_per_batch=real_count, latent_dim=config.latent_dim,
        num_classes=spec.num_classes, adc_weight=config.adc_weight, feature_weight=config.feature_weight,
        balance_weight=config.balance_weight, count_momentum=config.count_momentum,
        effective_beta=config.effective_beta)
    rng = jax.random.key(config.seed)
    generator = models.get_generator(config.generator_channels, spec.image_size, spec.channels,
                                     bn_axis_name=parallel.BATCH_AXIS)
    discriminator = gan_models.Discriminator(spec.num_classes, feature_dim, config.discriminator_width)
    student = models.get_classifier(config.student, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS)
    backbone = student.clone(penultimate=True)
    projector = gan_models.Projector(feature_dim)
    gan_tx = lambda: state_lib.make_optimizer("adam", optax.constant_schedule(config.gan_lr), b1=0.0, b2=0.999)
    schedule = state_lib.make_schedule(config.schedule, config.learning_rate, config.student_iterations)
    student_tx = lambda: state_lib.make_optimizer(config.optimizer, schedule, config.momentum, config.weight_decay)
    g = state_lib.create_state(generator.clone(bn_axis_name=None), gan_tx(), jax.random.fold_in(rng, 1),
                               jnp.zeros((2, hp.latent_dim + spec.num_classes)))
    d = state_lib.create_state(discriminator, gan_tx(), jax.random.fold_in(rng, 2), example)
    s = state_lib.create_state(student.clone(bn_axis_name=None), student_tx(), jax.random.fold_in(rng, 3), example)
    p = state_lib.create_state(projector, student_tx(), jax.random.fold_in(rng, 4), jnp.zeros((1, backbone.apply(
        {"params": s.params, "batch_stats": s.batch_stats} if s.batch_stats else {"params": s.params}, example).shape[-1])))
    state = hidfd.HiDFDState(step=jnp.zeros((), jnp.int32), generator=g.replace(apply_fn=generator.apply),
                             discriminator=d, student=s.replace(apply_fn=backbone.apply), projector=p,
                             class_counts=jnp.ones((spec.num_classes,), jnp.float32))
    gan_iteration, student_iteration = hidfd.make_steps(hp, teacher_model, spec, mesh)
    shipped = gan_models.ClassifierSharing(backbone.clone(bn_axis_name=None), projector, spec.num_classes)
    teacher_head = jax.device_get(teacher_vars["params"][teacher_model.head])
    teacher_vars = parallel.replicate(teacher_vars, mesh)
    total = config.gan_iterations + config.student_iterations

    def step(n, state):
        if n <= config.gan_iterations:
            idx = data.cycled_batch(len(train_x), config.batch_size, config.seed, n - 1)
            return gan_iteration(state, teacher_vars, parallel.shard_batch(train_x[idx], mesh),
                                 parallel.shard_batch(train_y[idx], mesh), rng)
        idx = data.cycled_batch(len(train_x), real_count, config.seed + 1, n - 1 - config.gan_iterations)
        return student_iteration(state, teacher_vars, parallel.shard_batch(train_x[idx], mesh), rng)

    def shipped_variables(s):
        v = {"params": {"backbone": s.student.params, "projector": s.projector.params, "teacher_head": teacher_head}}
        if s.student.batch_stats:
            v["batch_stats"] = {"backbone": s.student.batch_stats}
        return v

    draw = jax.jit(lambda variables, z: generator.clone(bn_axis_name=None).apply(
        variables, z, train=True, mutable=["batch_stats"])[0])
    grid = config.sample_grid
    sample_z = synthesis.with_classes(jax.random.normal(jax.random.fold_in(rng, 5), (grid, hp.latent_dim)),
                                      jnp.arange(grid) % spec.num_classes, spec.num_classes) if grid else None

    def summarize(state, last_eval, wall_s):
        return {"method": "hidfd", "dataset": config.dataset, "teacher": config.teacher, "teacher_acc": teacher_acc,
                "student": config.student, "student_acc": last_eval["test/student_accuracy"],
                "real_images": len(train_x), "real_per_batch": real_count, "gan_iterations": config.gan_iterations,
                "student_iterations": config.student_iterations, "wall_s": wall_s, "devices": mesh.size}

    return Run(
        name="hidfd", state=state, place=lambda st: parallel.replicate(st, mesh), step=step, total_steps=total,
        steps_per_epoch=config.iters_per_epoch,
        identity=identity(config, teacher_fingerprint=checkpoints.variables_fingerprint(jax.device_get(teacher_vars))),
        evaluate=lambda st: {"test/student_accuracy": evaluate(shipped, shipped_variables(st), eval_set)},
        summarize=summarize, phase=lambda n: "gan " if n <= config.gan_iterations else "student ",
        report=lambda sm: f"student {sm['student']} (classifier-sharing) test accuracy {sm['student_acc']:.4f} "
                          f"from {sm['real_images']} real images (teacher {sm['teacher']} {sm['teacher_acc']:.4f})",
        sample=(lambda st: jax.device_get(data.denormalize(draw(state_lib.variables_of(st.generator), sample_z), spec)))
        if grid else None,
        log_every=config.log_every, checkpoint_every=config.checkpoint_every)
