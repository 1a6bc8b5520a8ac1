"""Knowledge distillation on real images (all of a training set, or a few)."""

import jax
import jax.numpy as jnp

from ddad_jax import augment, data, models, parallel, state as state_lib, workdir as workdir_lib
from ddad_jax import teacher as teacher_lib
from ddad_jax.export import card as card_lib
from ddad_jax.trainers import sizes
from ddad_jax.trainers.common import Run, dataset_spec, eval_set as make_eval_set, identity, kd_params, train_subset
from ddad_jax.evaluation import evaluate
from ddad_jax.methods import kd


def build_kd(config) -> Run:
    spec = dataset_spec(config)  # preprocessed as the teacher's card says
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    hp = kd.KDHyper(student_objective=config.student_objective, kd=kd_params(config),
                    augment=teacher_lib.SUPERVISED_AUGMENT if spec.augment else augment.Augment())
    uses = hp.uses
    image_shape = (spec.image_size, spec.image_size, spec.channels)
    sizes.check_step_memory(config.batch_size, mesh, {
        f"{role} {name}": (models.get_classifier(name, spec.num_classes), image_shape, {})
        for role, name, used in (("student", config.student, True), ("teacher", config.teacher, uses["teacher"]),
                                 ("scratch teacher", config.teacher, uses["scratch"])) if used})
    teacher_model = teacher_vars = None
    teacher_acc = None
    train_x, train_y = data.load_split(spec, "train", config.data_dir or None)
    keep = train_subset(config, spec, train_y)
    train_x, train_y = train_x[keep], train_y[keep]  # nothing else of the split is kept
    eval_set = make_eval_set(config, spec, mesh, evaluated={
        f"{role} {name}": models.get_classifier(name, spec.num_classes)
        for role, name, used in (("student", config.student, True), ("teacher", config.teacher, uses["teacher"])) if used})
    if uses["teacher"]:
        teacher_model, teacher_vars, _ = teacher_lib.load_teacher(config.teacher_dir, config.teacher, config.dataset, spec=spec)
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

    fingerprint = workdir_lib.variables_fingerprint(jax.device_get(teacher_vars)) if teacher_vars is not None else ""
    return Run(
        name="kd", state=state, place=lambda s: parallel.replicate(s, mesh), step=step, total_steps=total,
        steps_per_epoch=steps_per_epoch, identity=identity(config, teacher_fingerprint=fingerprint),
        evaluate=evaluate_state, summarize=summarize,
        report=lambda s: f"student {s['student']} ({s['student_objective']}, {s['train_examples']} real images) "
                         f"test accuracy {s['student_acc']:.4f}"
                         + (f" (teacher {s['teacher']} {s['teacher_acc']:.4f})" if s["teacher"] else ""),
        export=lambda workdir, s, summary: card_lib.save_student(workdir, state_lib.variables_of(s.student), summary, spec),
        log_every=config.log_every, checkpoint_every=config.checkpoint_every)
