"""Reading a finished distillation run for its export: its record and summary, its student,
and images of its final generator -- from the run's own files (``run.json``, ``summary.json``,
the student card, the last checkpoint) and the ``models`` registry; no config, no dataset.

Runs made before the student was exported at the end (no ``RUN/student/``) give their
student from their latest checkpoint and ``summary.json``. HiDFD is not exported: its student
shares the teacher's classifier (``ClassifierSharing``), not a network of the registry.
"""

import os
import shutil
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np

from ddad_jax import checkpoints, models, synthesis, workdir as workdir_lib
from ddad_jax.errors import UserError
from ddad_jax.export import card as card_lib

EXPORTED_KINDS = ("ddad", "inversion", "kd")  # run kinds whose student is a registry classifier
CALIBRATION_KINDS = ("ddad",)  # run kinds with one generator that made every training image


def read_run(run_dir: str) -> Tuple[dict, dict]:
    """(run.json, summary.json) of a finished distillation run; UserError otherwise."""
    if not workdir_lib.path(run_dir).is_dir():
        raise UserError(f"--run {run_dir} is not a directory")
    identity = card_lib.read_json(os.path.join(run_dir, workdir_lib.RUN_RECORD), "run record (run.json)")
    kind = identity.get("kind")
    if kind == "teacher":
        raise UserError(f"--run {run_dir} is a teacher run, not a distillation run; its export is "
                        f"{os.path.join(run_dir, 'teacher')}/")
    if kind == "hidfd":
        raise UserError(f"--run {run_dir} is a HiDFD run: its classifier-sharing student is not a registry "
                        "network and is not exported")
    if kind not in EXPORTED_KINDS:
        raise UserError(f"--run {run_dir} is a '{kind}' run; only {', '.join(EXPORTED_KINDS)} runs are exported")
    if not workdir_lib.path(os.path.join(run_dir, "summary.json")).exists():
        raise UserError(f"--run {run_dir} is not finished (no summary.json); rerun its command to finish it")
    return identity, card_lib.read_json(os.path.join(run_dir, "summary.json"), "run summary")


def final_state(run_dir: str) -> Tuple[int, Any]:
    """(step, state) of a run's latest checkpoint, restored as saved (nested dicts of numpy
    arrays, on one device whatever devices saved it): no config or data needed to read it."""
    directory = os.path.join(run_dir, "checkpoints")
    if not workdir_lib.path(directory).is_dir():
        raise UserError(f"--run {run_dir} has no checkpoints/ to read the final state from")
    latest = checkpoints.restore_latest(directory)
    if latest is None:
        raise UserError(f"--run {run_dir} has no checkpoint in {workdir_lib.absolute(directory)}")
    return latest


def variables_of(tree: dict) -> dict:
    """A network's variables (``params``, and ``batch_stats`` if it has any) in a saved train state."""
    v = {"params": tree["params"]}
    if tree.get("batch_stats"):
        v["batch_stats"] = tree["batch_stats"]
    return v


def saved_card(run_dir: str) -> Optional[dict]:
    """The card of the student the run exported at its end; None for a run made before that."""
    if workdir_lib.path(os.path.join(run_dir, card_lib.STUDENT_CARD)).exists() and \
            workdir_lib.path(os.path.join(run_dir, card_lib.STUDENT_SUBDIR)).is_dir():
        return card_lib.read_card(run_dir)
    return None


def write_student(run_dir: str, summary: dict, dest: str) -> dict:
    """The run's final student into ``dest/student/``; returns its card (not yet written):
    the run's own, or for a run made before students were exported, one made from its
    summary and latest checkpoint (then without ``generator``)."""
    card = saved_card(run_dir)
    if card is not None:
        source, copy = os.path.join(run_dir, card_lib.STUDENT_SUBDIR), os.path.join(dest, card_lib.STUDENT_SUBDIR)
        if workdir_lib.is_remote(source):  # the same arrays, read from the bucket and saved here
            checkpoints.save_variables(copy, checkpoints.load_variables_as_saved(source))
        else:
            shutil.copytree(source, copy)
        return card
    step, state = final_state(run_dir)
    checkpoints.save_variables(os.path.join(dest, card_lib.STUDENT_SUBDIR), variables_of(state["student"]))
    return {**card_lib.student_card(summary), "run_dir": workdir_lib.absolute(run_dir), "from_checkpoint_step": step}


def calibration_generator(run_dir: str, identity: dict) -> Dict[str, Any]:
    """The card's ``generator`` of a run whose generator made its training images (the int8
    calibration source); UserError saying what is missing otherwise."""
    if identity["kind"] not in CALIBRATION_KINDS:
        raise UserError(f"--int8 calibrates on images of the run's generator, and a run of kind '{identity['kind']}' "
                        "has no generator that made its training images; export it without --int8")
    rewrite = ("rerun the run's command with this ddad_jax (the run is finished: it trains nothing and rewrites "
               f"{card_lib.STUDENT_CARD}), or export without --int8")
    card = saved_card(run_dir)
    if card is None:
        raise UserError(f"--int8: --run {run_dir} has no {card_lib.STUDENT_CARD} recording its generator (it was "
                        f"made before runs exported their student); {rewrite}")
    missing = card_lib.missing_keys(card, card_lib.GENERATOR_KEYS)
    if missing:
        raise UserError(f"--int8: {os.path.join(run_dir, card_lib.STUDENT_CARD)} does not record the generator "
                        f"(missing {', '.join(missing)}; a card of an older ddad_jax); {rewrite}")
    return check_generator(card["generator"], os.path.join(run_dir, card_lib.STUDENT_CARD))


def check_generator(entry: Dict[str, Any], where: str) -> Dict[str, Any]:
    """``entry`` (a card's ``generator``) if its values can build and feed a generator."""
    shape = entry["image_shape_hwc"]
    counts = {k: entry[k] for k in ("base_channels", "latent_dim", "batch_size")}
    bad = [f"{k}={v!r}" for k, v in counts.items() if not _is_int(v) or v < 1]
    if not _is_int(entry["num_classes"]) or entry["num_classes"] < 0:
        bad.append(f"num_classes={entry['num_classes']!r}")
    if not isinstance(entry["balanced_targets"], bool):
        bad.append(f"balanced_targets={entry['balanced_targets']!r}")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) and v >= 1 for v in shape)
            and shape[0] == shape[1] and shape[0] % 4 == 0):
        bad.append(f"image_shape_hwc={shape!r}")
    if bad:
        raise UserError(f"{where}: generator has {', '.join(bad)}; expected counts >= 1 (num_classes >= 0), "
                        "balanced_targets true or false, image_shape_hwc [size, size, channels] (size a multiple "
                        "of 4)")
    return entry


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def draw_images(entry: Dict[str, Any], variables, num_images: int, seed: int) -> np.ndarray:
    """``num_images`` images of the generator a card's ``entry`` describes, with ``variables``,
    drawn as in training: latents from ``synthesis.draw_latents`` (with classes for a
    conditional generator), BatchNorm on batches of the run's batch size."""
    size, _, channels = entry["image_shape_hwc"]
    generator = models.get_generator(entry["base_channels"], size, channels, arch=entry.get("arch", "dafl"))
    batch = entry["batch_size"]
    draw = jax.jit(lambda v, z: generator.apply(v, z, train=True, mutable=["batch_stats"])[0])
    rng, out = jax.random.key(seed), []
    for i in range(-(-num_images // batch)):
        z, _ = synthesis.draw_latents(jax.random.fold_in(rng, i), entry["latent_dim"], entry["num_classes"],
                                      (batch,), balanced=entry["balanced_targets"])
        out.append(np.asarray(draw(variables, z)))
    return np.concatenate(out)[:num_images].astype(np.float32)


def generator_images(run_dir: str, num_images: int, seed: int = 0) -> Tuple[np.ndarray, dict]:
    """``num_images`` normalised NHWC float32 images from a DDAD-shaped run's final generator
    (its latest checkpoint), drawn as in training (``draw_images``), the generator built
    from the student card's ``generator``. Reads no dataset. Returns (images, where they
    came from)."""
    identity, _ = read_run(run_dir)
    entry = calibration_generator(run_dir, identity)
    step, state = final_state(run_dir)
    images = draw_images(entry, variables_of(state["generator"]), num_images, seed)
    return images, {"source": "generator", "checkpoint_step": step, "seed": seed, "batch_size": entry["batch_size"]}
