"""Teachers: the supervised training step, export, and loading them (frozen) for distillation.

A finished run leaves in its workdir ``teacher/`` (the model's variables, an orbax
checkpoint) and ``teacher.json`` (architecture, dataset and its spec, measured test accuracy).
"""

import json
import os
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

from ddad_jax import augment as augment_lib
from ddad_jax import checkpoints, data, models, objectives, parallel, state as state_lib, workdir as workdir_lib
from ddad_jax.errors import UserError

TEACHER_SUBDIR, TEACHER_META = "teacher", "teacher.json"
# Teachers handed over in Python (``ddad_jax.api``), by name: a config then says
# ``teacher_dir = "python:NAME"`` (``PROVIDED_PREFIX``) instead of naming a directory.
PROVIDED_PREFIX = "python:"
_PROVIDED = {}


def provide(name: str, model, variables, meta: dict) -> str:
    """Registers an in-memory teacher (a Flax module, its variables, a card) for this process;
    returns the ``teacher_dir`` a config names it by."""
    _PROVIDED[name] = (model, variables, dict(meta))
    return PROVIDED_PREFIX + name


SUPERVISED_AUGMENT = augment_lib.Augment(flip=True, shift=4, pad_mode="constant")


def augment(rng, x: jnp.ndarray) -> jnp.ndarray:
    """Random 4-pixel-padded crop and horizontal flip, per example (x in [0, 1], NHWC)."""
    params = augment_lib.draw(rng, SUPERVISED_AUGMENT, x.shape[:1])
    return augment_lib.apply(SUPERVISED_AUGMENT, x, params)


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
            loss = jax.lax.pmean(objectives.cross_entropy(logits, labels), parallel.BATCH_AXIS)
            acc = jax.lax.pmean(objectives.accuracy(logits, labels), parallel.BATCH_AXIS)
            return loss, (updates, acc)

        (loss, (updates, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
        return state, {"loss": loss, "train_acc": acc}

    sharded = parallel.data_parallel(
        per_replica, mesh,
        in_specs=(parallel.REPLICATED, parallel.SHARDED, parallel.SHARDED, parallel.REPLICATED),
        out_specs=(parallel.REPLICATED, parallel.REPLICATED))
    return jax.jit(sharded, donate_argnums=0)


def export(workdir: str, variables, summary: dict) -> None:
    """Writes a trained teacher as ``teacher/`` (its variables) and ``teacher.json``."""
    checkpoints.save_variables(os.path.join(workdir, TEACHER_SUBDIR), jax.device_get(variables))
    workdir_lib.write_atomically(os.path.join(workdir, TEACHER_META), json.dumps(summary, indent=2))


def card_spec(teacher_dir: str, dataset: str) -> Optional[data.DatasetSpec]:
    """The spec of ``dataset`` a teacher's card carries (``dataset_spec``), or None: the
    preprocessing the teacher was trained with (an imported teacher's own), and how a run with
    the teacher and no data at all knows a custom dataset's shape, classes and normalisation.
    Any problem with the card is left to ``load_teacher`` to report."""
    if not teacher_dir:
        return None
    try:
        if teacher_dir.startswith(PROVIDED_PREFIX):
            meta = _PROVIDED.get(teacher_dir[len(PROVIDED_PREFIX):], (None, None, {}))[2]
        else:
            meta = json.loads(workdir_lib.path(os.path.join(teacher_dir, TEACHER_META)).read_text())
        if meta.get("dataset") == dataset and isinstance(meta.get("dataset_spec"), dict):
            return data.spec_from_dict(meta["dataset_spec"])
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return None


def load_teacher(teacher_dir: str, model_name: str, dataset: str,
                 bn_axis_name=None, spec: Optional[data.DatasetSpec] = None) -> Tuple[Any, dict, dict]:
    """(model, variables, metadata) of an exported teacher, or of one ``provide``d in Python
    (``teacher_dir = "python:NAME"``); clear errors when it does not fit. ``spec``: the
    dataset's (default: ``data.get_spec(dataset)``)."""
    if teacher_dir.startswith(PROVIDED_PREFIX):
        name = teacher_dir[len(PROVIDED_PREFIX):]
        if name not in _PROVIDED:
            raise UserError(f"no teacher named '{name}' was provided in this process (ddad_jax.api.distill "
                            "provides one); a teacher directory is a path without the 'python:' prefix")
        model, variables, meta = _PROVIDED[name]
        if meta.get("model") != model_name or meta.get("dataset") != dataset:
            raise UserError(f"the provided teacher '{name}' is a '{meta.get('model')}' on '{meta.get('dataset')}', "
                            f"but the config asks for '{model_name}' on '{dataset}'")
        _refuse_non_finite(variables, f"the provided teacher '{name}'")
        return (model if bn_axis_name is None else model.clone(bn_axis_name=bn_axis_name)), variables, meta
    meta_path = os.path.join(teacher_dir, TEACHER_META)
    if not teacher_dir or not workdir_lib.path(meta_path).exists():
        raise UserError(f"no teacher checkpoint in '{teacher_dir}' (expected {TEACHER_META} and "
                        f"{TEACHER_SUBDIR}/); train one with configs/teacher.py or set --config.teacher_dir")
    try:
        meta = json.loads(workdir_lib.path(meta_path).read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
    except (OSError, ValueError) as e:
        raise UserError(f"{meta_path} is not a readable teacher card ({str(e).splitlines()[0][:120]}); "
                        "re-export the teacher with configs/teacher.py") from None
    if meta.get("model") != model_name:
        raise UserError(f"teacher in {teacher_dir} is a '{meta.get('model')}', but the config asks for "
                        f"'{model_name}'; set --config.teacher={meta.get('model')} or another teacher_dir")
    if meta.get("dataset") != dataset:
        raise UserError(f"teacher in {teacher_dir} was trained on '{meta.get('dataset')}', not '{dataset}'")
    spec = spec or data.get_spec(dataset)
    model = models.get_classifier(model_name, spec.num_classes, bn_axis_name=bn_axis_name)
    # Only shapes are needed to restore into: no initialisation is run.
    target = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, spec.image_size, spec.image_size, spec.channels)))
    try:
        variables = checkpoints.load_variables(os.path.join(teacher_dir, TEACHER_SUBDIR), dict(target))
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"teacher checkpoint in {teacher_dir} does not match a '{model_name}' "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    _refuse_non_finite(variables, f"the teacher in {teacher_dir}")
    return model, variables, meta


def _refuse_non_finite(variables, what: str) -> None:
    """UserError naming the first layer with a NaN or infinity: such a teacher would only show
    up later as a non-finite loss, blamed on whatever the generator computed first."""
    bad = state_lib.first_non_finite(variables)
    if bad is not None:
        raise UserError(f"{what} has non-finite values, first in {bad}; it cannot be distilled "
                        "(retrain or re-export it)")
