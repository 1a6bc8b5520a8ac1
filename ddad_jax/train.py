"""The data-free training loop: DDAD from a frozen teacher into a student.

config -> load teacher (frozen) and the real test split (evaluation only) -> generator and
student states -> jitted data-parallel iterations (then, with ``finetune_epochs``, student-only
iterations on the frozen generator) -> every epoch: evaluate the student, write metrics and
a sample grid, checkpoint -> ``summary.json``.
"""

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ddad_jax import augment, checkpoints, data, models, parallel, reporting, state as state_lib
from ddad_jax.errors import UserError
from ddad_jax.evaluation import EvalSet, evaluate
from ddad_jax.methods import ddad, replay
from ddad_jax.teacher import load_teacher

_IDENTITY_KEYS = ("kind", "dataset", "teacher", "student", "generator_channels", "latent_dim")


def hyper_from_config(config) -> ddad.DDADHyper:
    return ddad.DDADHyper(
        bn_weight=0.0 if config.adversarial_only else config.bn_weight,
        adv_weight=config.adv_weight, discrepancy=config.discrepancy,
        temperature=config.temperature, student_discrepancy=config.student_discrepancy,
        student_steps=config.student_steps_per_generator_step,
        batch_size=config.batch_size, latent_dim=config.latent_dim,
        replay_slots=config.replay_slots, onehot_weight=config.onehot_weight,
        balance_weight=config.balance_weight,
        num_classes=data.get_spec(config.dataset).num_classes if config.class_weight else 0,
        class_weight=config.class_weight, student_ema=config.student_ema,
        student_augment=augment.Augment(flip=config.student_flip,
                                        shift=config.student_shift,
                                        mixup_alpha=config.student_mixup_alpha))


def _schedule(config, base_lr: float, updates_per_iteration: int, kind: str = ""):
    per_epoch = config.iters_per_epoch * updates_per_iteration
    return state_lib.make_schedule(kind or config.lr_schedule, base_lr, config.num_epochs * per_epoch,
                                   [m * per_epoch for m in config.lr_milestones], config.lr_gamma)


def student_schedule(config) -> optax.Schedule:
    """The student's learning rate per update: ``lr_schedule`` over the adversarial epochs,
    then, over ``finetune_epochs``, a cosine from ``finetune_lr`` to 0."""
    k = config.student_steps_per_generator_step
    main = _schedule(config, config.student_lr, k)
    if not config.finetune_epochs:
        return main
    per_epoch = config.iters_per_epoch * k
    tail = optax.cosine_decay_schedule(config.finetune_lr, config.finetune_epochs * per_epoch)
    return optax.join_schedules([main, tail], [config.num_epochs * per_epoch])


def generator_input_dim(config) -> int:
    """Latent size plus, for a class-conditional generator, the one-hot class."""
    return config.latent_dim + hyper_from_config(config).num_classes


def create_state(config, spec, generator, student, rng) -> ddad.DDADState:
    g_tx = state_lib.make_optimizer("adam", _schedule(config, config.generator_lr, 1,
                                                      config.generator_lr_schedule))
    s_tx = state_lib.make_optimizer(config.student_optimizer, student_schedule(config),
                                    config.student_momentum, config.student_weight_decay)
    image = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))
    # Initialised outside the data-parallel map, where the `batch` axis does not exist yet.
    g = state_lib.create_state(generator.clone(bn_axis_name=None), g_tx, jax.random.fold_in(rng, 1),
                               jnp.zeros((2, generator_input_dim(config))))
    s = state_lib.create_state(student.clone(bn_axis_name=None), s_tx, jax.random.fold_in(rng, 2), image)
    memory = replay.init(config.replay_slots, config.batch_size,
                         (spec.image_size, spec.image_size, spec.channels), spec.num_classes)
    s = s.replace(apply_fn=student.apply)
    return ddad.DDADState(step=jnp.zeros((), jnp.int32), generator=g.replace(apply_fn=generator.apply),
                          student=s, memory=memory,
                          student_ema=ddad.init_student_ema(s) if config.student_ema else None)


_COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config):
    """The networks' compute dtype. With bfloat16, convolutions and matmuls run in bf16 while
    parameters, optimiser state, BatchNorm statistics (flax reduces them in float32), the
    captured teacher BN statistics and all losses stay float32."""
    name = config.get("compute_dtype", "float32")
    if name not in _COMPUTE_DTYPES:
        raise UserError(f"compute_dtype must be one of {', '.join(_COMPUTE_DTYPES)}, got '{name}'")
    return _COMPUTE_DTYPES[name]


def _validate(config, teacher_vars):
    if config.student_steps_per_generator_step < 1:
        raise UserError("student_steps_per_generator_step must be >= 1")
    if config.student_optimizer not in ("sgd", "adam"):
        raise UserError(f"student_optimizer must be 'sgd' or 'adam', got '{config.student_optimizer}'")
    if config.replay_slots < 0:
        raise UserError(f"replay_slots must be >= 0 (0 = no replay), got {config.replay_slots}")
    if config.student_shift < 0 or config.student_mixup_alpha < 0:
        raise UserError("student_shift and student_mixup_alpha must be >= 0 (0 = off)")
    if not 0.0 <= config.student_ema < 1.0:
        raise UserError(f"student_ema must be in [0, 1) (0 = off), got {config.student_ema}")
    if config.class_weight < 0:
        raise UserError("class_weight must be >= 0 (0 = unconditional generator)")
    known = ", ".join(state_lib.SCHEDULES)
    if config.lr_schedule not in state_lib.SCHEDULES:
        raise UserError(f"lr_schedule must be one of {known}, got '{config.lr_schedule}'")
    if config.generator_lr_schedule not in ("", *state_lib.SCHEDULES):
        raise UserError(f"generator_lr_schedule must be empty (= lr_schedule) or one of {known}, "
                        f"got '{config.generator_lr_schedule}'")
    if config.finetune_epochs < 0 or (config.finetune_epochs and config.finetune_lr <= 0):
        raise UserError("finetune_epochs must be >= 0 (0 = off) and finetune_lr > 0")
    if config.finetune_discrepancy not in ("l1", "kl"):
        raise UserError(f"finetune_discrepancy must be 'l1' or 'kl', got '{config.finetune_discrepancy}'")
    if config.discrepancy not in ("l1", "kl"):
        raise UserError(f"discrepancy must be 'l1' or 'kl', got '{config.discrepancy}'")
    if config.student_discrepancy not in ("", "l1", "kl"):
        raise UserError("student_discrepancy must be empty (= discrepancy), 'l1' or 'kl', "
                        f"got '{config.student_discrepancy}'")
    if not teacher_vars.get("batch_stats") and not config.adversarial_only:
        raise UserError(f"teacher '{config.teacher}' has no BatchNorm layers, so DDAD's BN-statistics "
                        "discriminator has nothing to match; use a BN teacher (e.g. lenet5_bn) or set "
                        "--config.adversarial_only=True explicitly")


def evaluate_students(student_model, state: ddad.DDADState, eval_set):
    """Test accuracy of the student the run delivers -- its moving average when there is one
    -- and the metrics to log (with an average, the raw student's accuracy too)."""
    raw = evaluate(student_model, state_lib.variables_of(state.student), eval_set)
    if state.student_ema is None:
        return raw, {"test/student_accuracy": raw}
    averaged = evaluate(student_model, state.student_ema, eval_set)
    return averaged, {"test/student_accuracy": averaged, "test/student_raw_accuracy": raw}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    spec = data.get_spec(config.dataset)
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    teacher_model, teacher_vars, teacher_meta = load_teacher(
        config.teacher_dir, config.teacher, config.dataset, bn_axis_name=parallel.BATCH_AXIS)
    _validate(config, teacher_vars)
    dtype = compute_dtype(config)
    identity = {**config.to_dict(), "generator_classes": hyper_from_config(config).num_classes or None}
    checkpoints.guard_workdir(workdir, identity, _IDENTITY_KEYS + ("generator_classes",))

    test_x, test_y = data.load_split(spec, "test", config.data_dir or None)
    if config.eval_examples > 0:
        test_x, test_y = test_x[:config.eval_examples], test_y[:config.eval_examples]
    eval_set = EvalSet.build(test_x, test_y, spec, config.eval_batch_size, mesh)
    teacher_acc = evaluate(teacher_model, teacher_vars, eval_set)
    print(f"[ddad] teacher {config.teacher} from {config.teacher_dir}: test accuracy {teacher_acc:.4f}",
          flush=True)

    generator = models.get_generator(config.generator_channels, spec.image_size, spec.channels,
                                     bn_axis_name=parallel.BATCH_AXIS, dtype=dtype)
    # Sample grids are drawn outside the parallel map, compiled once.
    sample = jax.jit(lambda variables, z: generator.clone(bn_axis_name=None).apply(
        variables, z, train=True, mutable=["batch_stats"])[0])
    student = models.get_classifier(config.student, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS,
                                    dtype=dtype)
    student_f32 = student.clone(dtype=jnp.float32)  # evaluation always in float32
    rng = jax.random.key(config.seed)
    state = create_state(config, spec, generator, student, rng)

    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
    restored = ckpt.restore(state)
    if restored is not None:
        state = restored
        print(f"[ddad] resuming from iteration {int(state.step)}", flush=True)
    hp = hyper_from_config(config)
    state = ddad.place_state(state, hp, mesh)
    teacher_vars = parallel.replicate(teacher_vars, mesh)

    iteration = ddad.make_iteration(teacher_model.clone(dtype=dtype), hp, mesh)
    finetune = ddad.make_iteration(  # then student-only iterations on the frozen generator's images
        teacher_model.clone(dtype=dtype), dataclasses.replace(hp, student_discrepancy=config.finetune_discrepancy),
        mesh, adversarial=False) if config.finetune_epochs else None
    epochs = config.num_epochs + config.finetune_epochs
    adversarial_total, total = config.num_epochs * config.iters_per_epoch, epochs * config.iters_per_epoch
    start = int(state.step)
    reporter = reporting.Reporter(workdir, total, start_step=start)
    sample_z = jax.random.normal(jax.random.fold_in(rng, 3), (config.sample_grid, config.latent_dim))
    if hp.num_classes:  # a conditional generator's grid goes through the classes in order
        sample_z = ddad.with_classes(sample_z, jnp.arange(config.sample_grid) % hp.num_classes, hp.num_classes)
    student_acc, best_acc, t0 = float("nan"), float("nan"), time.time()

    def check_finite(step, metrics):
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        if bad:
            raise UserError(f"non-finite {bad[0]} at iteration {step}; stopping without saving "
                            "(the last good checkpoint is kept)")

    for step in range(start + 1, total + 1):
        state, metrics = (iteration if step <= adversarial_total else finetune)(state, teacher_vars, rng)
        end_of_epoch = step % config.iters_per_epoch == 0
        if step % config.log_every == 0 or end_of_epoch:
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            check_finite(step, metrics)
            phase = "" if step <= adversarial_total else "fine-tune "
            reporter.progress(step, metrics, prefix=f"[ddad] {phase}epoch {(step - 1) // config.iters_per_epoch + 1} ")
            reporter.write(step, metrics)
        if end_of_epoch:
            epoch = step // config.iters_per_epoch
            student_acc, accuracies = evaluate_students(student_f32, state, eval_set)
            best_acc = student_acc if not best_acc >= student_acc else best_acc
            reporter.write(step, {**accuracies, "test/teacher_accuracy": teacher_acc})
            raw = f", raw student {accuracies['test/student_raw_accuracy']:.4f}" if hp.student_ema else ""
            print(f"[ddad] epoch {epoch}/{epochs}: student test accuracy {student_acc:.4f}{raw} "
                  f"(teacher {teacher_acc:.4f}, {time.time() - t0:.0f}s)", flush=True)
            images = sample(state_lib.variables_of(state.generator), sample_z)
            reporting.save_image_grid(os.path.join(workdir, "samples", f"epoch_{epoch:04d}.png"),
                                      jax.device_get(data.denormalize(images, spec)))
        if end_of_epoch or (config.checkpoint_every and step % config.checkpoint_every == 0):
            if not state_lib.all_finite(state):
                raise UserError(f"non-finite parameters at iteration {step}; stopping without saving")
            ckpt.save(step, state)
    ckpt.close()
    reporter.close()
    if not np.isfinite(student_acc):  # nothing left to run (a finished run resumed): evaluate it
        student_acc, _ = evaluate_students(student_f32, state, eval_set)
    summary = {"method": "ddad", "dataset": config.dataset, "teacher": config.teacher,
               "teacher_dir": os.path.abspath(config.teacher_dir), "teacher_acc": teacher_acc,
               "teacher_acc_at_training": teacher_meta.get("test_acc"), "student": config.student,
               "student_acc": student_acc, "best_student_acc": best_acc if np.isfinite(best_acc) else student_acc,
               "iterations": adversarial_total, "finetune_iterations": total - adversarial_total,
               "replay_slots": config.replay_slots,
               "class_weight": config.class_weight, "student_ema": config.student_ema,
               "wall_s_this_run": time.time() - t0, "devices": mesh.size}
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"[ddad] done: student {config.student} test accuracy {student_acc:.4f} "
          f"(teacher {config.teacher} {teacher_acc:.4f})", flush=True)
    return summary
