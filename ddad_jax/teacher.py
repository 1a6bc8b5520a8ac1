"""Supervised training of teachers, their export, and loading them (frozen) for distillation.

A finished run leaves in its workdir ``teacher/`` (the model's variables, an orbax
checkpoint) and ``teacher.json`` (architecture, dataset, measured test accuracy).
"""

import json
import os
import time
from typing import Any, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ddad_jax import augment as augment_lib
from ddad_jax import checkpoints, data, losses, models, parallel, reporting, state as state_lib
from ddad_jax.errors import UserError
from ddad_jax.evaluation import EvalSet, evaluate

TEACHER_SUBDIR, TEACHER_META = "teacher", "teacher.json"


_SUPERVISED_AUGMENT = augment_lib.Augment(flip=True, shift=4, pad_mode="constant")


def augment(rng, x: jnp.ndarray) -> jnp.ndarray:
    """Random 4-pixel-padded crop and horizontal flip, per example (x in [0, 1], NHWC)."""
    params = augment_lib.draw(rng, _SUPERVISED_AUGMENT, x.shape[:1])
    return augment_lib.apply(_SUPERVISED_AUGMENT, x, params)


def make_train_step(model, spec: data.DatasetSpec, mesh):
    """One data-parallel supervised step: (state, images uint8, labels, rng) -> state, metrics."""

    def per_replica(state, images, labels, rng):
        x = images.astype(jnp.float32) / 255.0
        if spec.augment:
            x = augment(jax.random.fold_in(rng, jax.lax.axis_index(parallel.BATCH_AXIS)), x)
        x = data.normalize(x * 255.0, spec)

        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                                          train=True, mutable=["batch_stats"])
            loss = jax.lax.pmean(losses.cross_entropy(logits, labels), parallel.BATCH_AXIS)
            acc = jax.lax.pmean(losses.accuracy(logits, labels), parallel.BATCH_AXIS)
            return loss, (updates, acc)

        (loss, (updates, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
        return state, {"loss": loss, "train_acc": acc}

    sharded = parallel.data_parallel(
        per_replica, mesh,
        in_specs=(parallel.REPLICATED, parallel.SHARDED, parallel.SHARDED, parallel.REPLICATED),
        out_specs=(parallel.REPLICATED, parallel.REPLICATED))
    return jax.jit(sharded, donate_argnums=0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains ``config.model`` on ``config.dataset``; exports it; returns the summary."""
    spec = data.get_spec(config.dataset)
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    model = models.get_classifier(config.model, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS)
    checkpoints.guard_workdir(workdir, config.to_dict(), ("kind", "dataset", "model"))

    train_x, train_y = data.load_split(spec, "train", config.data_dir or None)
    test_x, test_y = data.load_split(spec, "test", config.data_dir or None)
    if config.eval_examples > 0:
        test_x, test_y = test_x[:config.eval_examples], test_y[:config.eval_examples]
    eval_set = EvalSet.build(test_x, test_y, spec, config.eval_batch_size, mesh)
    local_batch = config.batch_size // jax.process_count()
    steps_per_epoch = len(train_x) // local_batch
    if config.steps_per_epoch > 0:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    total_steps = steps_per_epoch * config.num_epochs

    schedule = state_lib.make_schedule(config.schedule, config.learning_rate, total_steps)
    tx = state_lib.make_optimizer(config.optimizer, schedule, config.momentum, config.weight_decay)
    rng = jax.random.key(config.seed)
    example = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))
    state = state_lib.create_state(model, tx, jax.random.fold_in(rng, 0), example)

    ckpt = checkpoints.Checkpointer(os.path.join(workdir, "checkpoints"))
    restored = ckpt.restore(state)
    state = restored if restored is not None else state
    start_epoch = int(state.step) // max(steps_per_epoch, 1)
    if restored is not None:
        print(f"resuming teacher training from step {int(state.step)} (epoch {start_epoch})", flush=True)
    state = parallel.replicate(state, mesh)

    train_step = make_train_step(model, spec, mesh)
    reporter = reporting.Reporter(workdir, total_steps, start_step=int(state.step))
    test_acc = float("nan")
    t0 = time.time()
    for epoch in range(start_epoch, config.num_epochs):
        batches = data.epoch_batches(len(train_x), local_batch, config.seed, epoch)
        for i, idx in zip(range(steps_per_epoch), batches):
            step = epoch * steps_per_epoch + i + 1
            images = parallel.shard_batch(train_x[idx], mesh)
            labels = parallel.shard_batch(train_y[idx], mesh)
            state, metrics = train_step(state, images, labels, jax.random.fold_in(rng, step))
            if step % config.log_every == 0 or i == steps_per_epoch - 1:
                metrics = jax.device_get(metrics)
                if not np.isfinite(metrics["loss"]):
                    raise UserError(f"non-finite loss at step {step}; stopping without saving "
                                    "(the last good checkpoint is kept)")
                reporter.progress(step, metrics, prefix=f"[teacher] epoch {epoch + 1} ")
                reporter.write(step, {f"train/{k}": v for k, v in metrics.items()})
        test_acc = evaluate(model, state_lib.variables_of(state), eval_set)
        reporter.write(int(state.step), {"test/accuracy": test_acc})
        print(f"[teacher] epoch {epoch + 1}/{config.num_epochs}: test accuracy {test_acc:.4f}", flush=True)
        ckpt.save(int(state.step), state)
    ckpt.close()
    reporter.close()
    if not np.isfinite(test_acc):  # resumed a finished run: evaluate what was restored
        test_acc = evaluate(model, state_lib.variables_of(state), eval_set)
    summary = {"model": config.model, "dataset": config.dataset, "test_acc": test_acc,
               "test_examples": int(len(test_x)), "epochs": config.num_epochs,
               "train_seconds_this_run": time.time() - t0}
    checkpoints.save_variables(os.path.join(workdir, TEACHER_SUBDIR),
                               jax.device_get(state_lib.variables_of(state)))
    with open(os.path.join(workdir, TEACHER_META), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"[teacher] {config.model} on {config.dataset}: test accuracy {test_acc:.4f}; "
          f"exported to {os.path.join(workdir, TEACHER_SUBDIR)}", flush=True)
    return summary


def load_teacher(teacher_dir: str, model_name: str, dataset: str,
                 bn_axis_name=None) -> Tuple[Any, dict, dict]:
    """(model, variables, metadata) of an exported teacher; clear errors when it does not fit."""
    meta_path = os.path.join(teacher_dir, TEACHER_META)
    if not teacher_dir or not os.path.exists(meta_path):
        raise UserError(f"no teacher checkpoint in '{teacher_dir}' (expected {TEACHER_META} and "
                        f"{TEACHER_SUBDIR}/); train one with configs/teacher.py or set --config.teacher_dir")
    with open(meta_path) as f:
        meta = json.load(f)
    if meta.get("model") != model_name:
        raise UserError(f"teacher in {teacher_dir} is a '{meta.get('model')}', but the config asks for "
                        f"'{model_name}'; set --config.teacher={meta.get('model')} or another teacher_dir")
    if meta.get("dataset") != dataset:
        raise UserError(f"teacher in {teacher_dir} was trained on '{meta.get('dataset')}', not '{dataset}'")
    spec = data.get_spec(dataset)
    model = models.get_classifier(model_name, spec.num_classes, bn_axis_name=bn_axis_name)
    # Only shapes are needed to restore into: no initialisation is run.
    target = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, spec.image_size, spec.image_size, spec.channels)))
    try:
        variables = checkpoints.load_variables(os.path.join(teacher_dir, TEACHER_SUBDIR), dict(target))
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"teacher checkpoint in {teacher_dir} does not match a '{model_name}' "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    return model, variables, meta
