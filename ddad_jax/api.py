"""Distil any Flax classifier in Python, not only the registry's: ``distill``.

    import ddad_jax.api
    from configs import ddad_plus                          # any distillation config
    summary = ddad_jax.api.distill(
        my_module, my_variables,                           # a Linen module with BatchNorm, {"params", "batch_stats"}
        input_shape=(32, 32, 3), num_classes=10,           # what the teacher takes and predicts
        mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),  # its input normalisation
        call_kwargs={"train": False},                      # how to call it in inference mode
        config=ddad_plus.get_config("cifar10"), student="resnet18", workdir="runs/my_student")

The run is the same as ``python -m experiments.<dataset> --config=...``'s (same loop,
checkpoints, resume, samples, ``summary.json`` and exported student), with the teacher handed
over in memory (``teacher.provide``) and the input described by the arguments
(``data.register_spec``) instead of a dataset name. Without data, the run reports the student's
agreement with the teacher on generated images (no dataset is read).

A module without BatchNorm has no running statistics for DDAD's first discriminator: that is
an error unless ``adversarial_only=True`` (DFAD's game: the generator maximises the
discrepancy only).
"""

from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddad_jax import data, objectives, teacher as teacher_lib
from ddad_jax.errors import UserError
from ddad_jax.models.adapter import FlaxTeacher, wrap_variables
from ddad_jax.trainers.common import require_batchnorm

INPUT_NAME = "flax_input"  # the registered input spec's name when no dataset is named


def input_spec(input_shape: Sequence[int], num_classes: int, mean: Sequence[float], std: Sequence[float],
               name: str = INPUT_NAME) -> data.DatasetSpec:
    """A ``DatasetSpec`` for a teacher's input: square images ``(size, size, channels)``, one
    mean and std per channel (what the teacher was trained on; images in [0, 1] are
    standardised with them)."""
    if len(input_shape) != 3 or input_shape[0] != input_shape[1] or min(input_shape) < 1:
        raise UserError(f"input_shape must be (size, size, channels), got {tuple(input_shape)}")
    size, channels = int(input_shape[0]), int(input_shape[2])
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise UserError(f"mean and std need one value per channel ({channels}), std > 0; got mean={tuple(mean)}, "
                        f"std={tuple(std)}")
    if num_classes < 2:
        raise UserError(f"num_classes must be >= 2, got {num_classes}")
    return data.DatasetSpec(name, "", int(num_classes), channels, size, size, tuple(map(float, mean)),
                            tuple(map(float, std)), False, "this input has no dataset behind it")


def check_teacher(model: nn.Module, variables: Any, spec: data.DatasetSpec) -> None:
    """The wrapped teacher runs on ``spec``'s input and gives ``(batch, num_classes)`` logits."""
    x = jnp.zeros((2, spec.image_size, spec.image_size, spec.channels))
    try:
        out = jax.eval_shape(lambda v: model.apply(v, x), variables)
    except UserError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"the teacher module does not run on inputs of shape {x.shape[1:]} with these variables "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    if out.shape != (2, spec.num_classes):
        raise UserError(f"the teacher returns shape {out.shape[1:]} per image, expected ({spec.num_classes},) logits")


def distill(teacher: nn.Module, variables: Any, *, workdir: str, input_shape: Sequence[int], num_classes: int,
            mean: Sequence[float], std: Sequence[float], config=None, call_kwargs: Optional[Mapping[str, Any]] = None,
            adversarial_only: bool = False, name: str = "flax_teacher", **overrides) -> dict:
    """Distils ``teacher`` (a Flax Linen classifier, frozen) into ``config.student`` and returns
    the run's summary (also written to ``workdir/summary.json``). ``config`` is any
    distillation config (default: ``configs/ddad.py``'s DDAD); ``overrides`` set its fields
    (``student="resnet18", num_epochs=10``)."""
    from ddad_jax import loop  # pylint: disable=import-outside-toplevel
    if config is None:
        try:
            from configs import ddad  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise UserError("pass config= (e.g. configs/ddad.py's get_config()); the configs/ folder is not "
                            "importable from here") from None
        config = ddad.base()
    config = config.copy_and_resolve_references()
    if config.get("kind") not in ("ddad", "inversion"):
        raise UserError(f"distill needs a data-free config (kind 'ddad' or 'inversion'), got {config.get('kind')!r}")
    fixed = sorted(set(overrides) & {"dataset", "teacher", "teacher_dir", "data_dir"})
    if fixed:
        raise UserError(f"'{fixed[0]}' is set by distill (the teacher and its input come from the arguments)")
    spec = data.register_spec(input_spec(input_shape, num_classes, mean, std))
    model = FlaxTeacher(teacher, tuple(sorted(dict(call_kwargs if call_kwargs is not None else {"train": False}).items())))
    wrapped = wrap_variables(variables)
    check_teacher(model, wrapped, spec)
    model_name = f"flax:{type(teacher).__name__}"
    terms = config.generator_terms.to_dict()
    if adversarial_only:
        terms = {k: (1.0 if k == "adversarial" else 0.0) for k in set(terms) | {"adversarial"}}
    else:
        require_batchnorm(wrapped, objectives.parse_terms(terms), model_name,
                          remedy="pass adversarial_only=True to distil it by the adversarial game alone (DFAD)")
    teacher_dir = teacher_lib.provide(name, model, wrapped, {"model": model_name, "dataset": spec.name,
                                                             "test_acc": None, "source": "flax",
                                                             "dataset_spec": data.spec_to_dict(spec)})
    with config.unlocked():
        config.dataset, config.teacher, config.teacher_dir = spec.name, model_name, teacher_dir
        config.generator_terms = terms
        config.eval_examples = 0  # no dataset behind the teacher: report agreement on generated images
        for key, value in overrides.items():
            if key not in config:
                raise UserError(f"unknown config field '{key}'")
            config[key] = value
    return loop.train_and_evaluate(config, workdir)
