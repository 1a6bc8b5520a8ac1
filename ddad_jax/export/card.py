"""The student card: what a finished run writes beside its final student, and reads it back.

``RUN/student/`` holds the student's variables (``{"params"[, "batch_stats"]}``, a standalone
orbax checkpoint, as a teacher's ``teacher/``); ``RUN/student.json`` is its card: the
architecture (a ``models`` registry name), input shape and how raw pixels become model input,
classes, the teacher it came from, its test accuracy -- and, for a run with a generator
(DDAD and the DDAD-shaped methods), what rebuilds that generator and draws its images as in
training (``generator``), so an export needs nothing but the run's own files.

Cards of format v1 (before ``generator`` was recorded) still load and export; what needs the
generator says which keys are missing (``missing_keys``).
"""

import json
import os
import subprocess
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

import ddad_jax
from ddad_jax import backends, checkpoints, data, models, workdir as workdir_lib
from ddad_jax.errors import UserError, reason

STUDENT_SUBDIR, STUDENT_CARD = "student", "student.json"
CARD_FORMAT = "ddad_jax student card v2"  # v2: + generator
STUDENT_KEYS = ("architecture", "num_classes", "input.shape_hwc")  # what loading the student needs
GENERATOR_KEYS = tuple(f"generator.{k}" for k in (  # what drawing the run's generator images needs
    "base_channels", "image_shape_hwc", "latent_dim", "num_classes", "balanced_targets", "batch_size"))


def preprocessing(spec: data.DatasetSpec) -> Dict[str, Any]:
    """How raw uint8 pixels become the model's input, as ``data.normalize`` computes it."""
    resize = spec.resize and spec.image_size != spec.source_size
    pad = 0 if spec.resize else (spec.image_size - spec.source_size) // 2
    steps = [f"x = pixels / 255 (uint8 {spec.source_size}x{spec.source_size}x{spec.channels} -> float32 in [0, 1])"]
    if pad:
        steps.append(f"zero-pad {pad} pixels on every side, in [0, 1] space: "
                     f"{spec.source_size}x{spec.source_size} -> {spec.image_size}x{spec.image_size}")
    if resize:
        steps.append(f"resize bilinearly (half-pixel centres, antialiased when shrinking), in [0, 1] space: "
                     f"{spec.source_size}x{spec.source_size} -> {spec.image_size}x{spec.image_size}")
    steps.append("x = (x - mean) / std, per channel (last axis)")
    return {"source_size": spec.source_size, "pad": pad, "resize": spec.image_size if resize else None,
            "scale": 1.0 / 255.0, "mean": list(spec.mean), "std": list(spec.std), "steps": steps}


def code_version() -> Dict[str, Optional[str]]:
    """ddad_jax's version and, in a git checkout, its short commit (``+dirty`` with local changes)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(ddad_jax.__file__)))
    commit = None
    try:
        run = lambda *args: subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                           check=True, timeout=10).stdout.strip()
        commit = run("rev-parse", "--short", "HEAD")
        if run("status", "--porcelain", "--untracked-files=no", "--", "ddad_jax"):
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": ddad_jax.__version__, "commit": commit}


def generator_entry(base_channels: int, arch: str, image_shape_hwc: Sequence[int], latent_dim: int, num_classes: int,
                    balanced_targets: bool, batch_size: int) -> Dict[str, Any]:
    """The card's ``generator``: ``models.get_generator(base_channels, H, C, arch=arch)`` fed latents as
    ``synthesis.draw_latents(rng, latent_dim, num_classes, (batch_size,), balanced_targets)``
    draws them in training -- Gaussian noise, followed by one-hot classes when ``num_classes``
    > 0 (a class-conditional generator) -- with BatchNorm over batches of ``batch_size``."""
    conditional = int(num_classes) > 0
    return {
        "base_channels": int(base_channels),
        "arch": str(arch),
        "image_shape_hwc": [int(v) for v in image_shape_hwc],
        "latent_dim": int(latent_dim),
        "num_classes": int(num_classes),
        "class_conditional": conditional,
        "targets": "one-hot classes after the latent noise" if conditional else None,
        "balanced_targets": bool(balanced_targets),
        "batch_size": int(batch_size),
        "output": "normalised NHWC float32 images, as the student's input after preprocessing",
        "variables": "checkpoints/ (the latest step's generator)",
    }


def student_card(summary: dict, spec: Optional[data.DatasetSpec] = None) -> Dict[str, Any]:
    """The card of a distillation run's student, from the run's summary (``Run.summarize``)
    and its dataset's spec (default: ``data.get_spec`` of the summary's dataset)."""
    spec = spec or data.get_spec(summary["dataset"])
    teacher = None
    if summary.get("teacher"):
        teacher = {"model": summary["teacher"], "teacher_dir": summary.get("teacher_dir"),
                   # measured by the run; else the teacher card's (a run without data)
                   "test_acc": next((summary[k] for k in ("teacher_acc", "teacher_acc_at_training")
                                     if summary.get(k) is not None), None)}
    return {
        "format": CARD_FORMAT,
        "architecture": summary["student"],
        "variables": f"{STUDENT_SUBDIR}/ (orbax: params, and batch_stats if the network has BatchNorm)",
        "dataset": summary["dataset"],
        "input": {"shape_hwc": [spec.image_size, spec.image_size, spec.channels], "layout": "NHWC",
                  "dtype": "float32"},
        "preprocessing": preprocessing(spec),
        "dataset_spec": data.spec_to_dict(spec),  # the same, as ``data.normalize`` reads it
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names) or None,
        "output": "logits (num_classes), no softmax",
        "method": summary.get("method"),
        "student_acc": summary.get("student_acc"),
        "teacher": teacher,
        "ddad_jax": code_version(),
    }


def card_spec(card: dict) -> Optional[data.DatasetSpec]:
    """The preprocessing a student card records (``dataset_spec``; None in older cards)."""
    entry = card.get("dataset_spec")
    return data.spec_from_dict(entry) if isinstance(entry, dict) else None


def save_student(workdir: str, variables, summary: dict, spec: Optional[data.DatasetSpec] = None,
                 generator: Optional[Dict[str, Any]] = None) -> None:
    """The end of a distillation run (``Run.export``): the final student as ``student/`` and
    its card ``student.json``, each replaced atomically. ``spec``: the run's dataset (a
    custom or in-memory one is not in the built-in table). ``generator``: a
    ``generator_entry`` (None: the run has no generator that made its training images)."""
    checkpoints.save_variables(os.path.join(workdir, STUDENT_SUBDIR), jax.device_get(variables))
    card = {**student_card(summary, spec), "generator": generator, "run_dir": workdir_lib.absolute(workdir)}
    write_card(workdir, card)


def write_card(directory: str, card: dict) -> None:
    """``directory/student.json``, replaced atomically."""
    workdir_lib.write_atomically(os.path.join(directory, STUDENT_CARD), json.dumps(card, indent=2) + "\n")


def read_json(path: str, what: str) -> dict:
    """The JSON object in ``path``; UserError naming ``what`` when absent or unreadable."""
    try:
        value = json.loads(workdir_lib.path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"no {what} at {path}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a readable {what} (a JSON {type(value).__name__})")
    return value


def missing_keys(card: dict, keys: Sequence[str]) -> List[str]:
    """Those of the dotted ``keys`` (``"input.shape_hwc"``) that ``card`` lacks or has as null."""
    missing = []
    for key in keys:
        node: Any = card
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            missing.append(key)
    return missing


def read_card(directory: str) -> dict:
    """The student card in ``directory`` (a run or an export DIR), with what loading it needs."""
    path = os.path.join(directory, STUDENT_CARD)
    card = read_json(path, "student card")
    missing = missing_keys(card, STUDENT_KEYS)
    if missing:
        raise UserError(f"{path} is not a complete student card (missing {', '.join(missing)})")
    return card


def student_model(card: dict, ops: Optional[backends.Ops] = None):
    """The card's network (``models.get_classifier``), its layers from ``ops``."""
    return models.get_classifier(card["architecture"], card["num_classes"], ops=ops)


def load_variables(directory: str, model, card: dict):
    """The student variables in ``directory/student/``, shaped as ``model`` on the card's input."""
    path = os.path.join(directory, STUDENT_SUBDIR)
    target = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *card["input"]["shape_hwc"])))
    try:
        return checkpoints.load_variables(path, dict(target))
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"student checkpoint {path} cannot be read as its card's architecture ({reason(e)})") from None


def load_student(directory: str, ops: Optional[backends.Ops] = None) -> Tuple[Any, dict, dict]:
    """(model, variables, card) of a student in ``directory`` (a run or an export DIR):
    ``model.apply(variables, x)`` gives the logits of normalised NHWC images ``x``."""
    card = read_card(directory)
    model = student_model(card, ops)
    return model, load_variables(directory, model, card), card
