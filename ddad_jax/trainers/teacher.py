"""Supervised teacher training: the teacher's network, its training split, the step, the export."""

import jax
import jax.numpy as jnp

from ddad_jax import data, models, parallel, state as state_lib
from ddad_jax import teacher as teacher_lib
from ddad_jax.trainers import sizes
from ddad_jax.trainers.common import Run, eval_set as make_eval_set, identity, no_eval_reason
from ddad_jax.errors import UserError
from ddad_jax.evaluation import evaluate


def build_teacher(config) -> Run:
    spec = data.get_spec(config.dataset, config.data_dir or None)
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    model = models.get_classifier(config.model, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS)
    unsharded = model.clone(bn_axis_name=None)  # shapes only: no `batch` axis outside the step
    sizes.check_step_memory(config.batch_size, mesh, {config.model: (
        unsharded, (spec.image_size, spec.image_size, spec.channels), {})})
    train_x, train_y = data.load_split(spec, "train", config.data_dir or None)
    # None: no test split (a custom dataset may have none)
    eval_set = make_eval_set(config, spec, mesh, optional=True, evaluated={config.model: unsharded})
    if eval_set is None:
        print(f"[teacher] {no_eval_reason(config, spec)}: no test accuracy (the progress lines show the training "
              "batches' accuracy)", flush=True)
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
        return {"model": config.model, "dataset": config.dataset, "test_acc": last_eval.get("test/accuracy"),
                "test_examples": eval_set.num_examples if eval_set else 0, "epochs": config.num_epochs, "wall_s": wall_s}

    return Run(
        name="teacher", state=state, place=lambda s: parallel.replicate(s, mesh), step=step, total_steps=total,
        steps_per_epoch=steps_per_epoch, identity=identity(config),
        evaluate=lambda s: {"test/accuracy": evaluate(model, state_lib.variables_of(s), eval_set)} if eval_set else {},
        summarize=summarize, log_every=config.log_every,
        report=lambda s: f"{s['model']} on {s['dataset']}: "
                         + (f"test accuracy {s['test_acc']:.4f}" if s["test_acc"] is not None else "no test split")
                         + f"; exported to {teacher_lib.TEACHER_SUBDIR}/ and {teacher_lib.TEACHER_META}",
        # the card carries the dataset's spec: a distillation run needs no data to know it
        export=lambda workdir, s, summary: teacher_lib.export(workdir, state_lib.variables_of(s),
                                                              {**summary, "dataset_spec": data.spec_to_dict(spec)}))
