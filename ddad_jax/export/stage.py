"""``export_student``: a run's final student into an export directory, written next to it
first and moved in only when complete, so a failing export leaves ``--out`` as it was."""

import os
import shutil
import tempfile
import time
from typing import Any, Dict, Optional

from ddad_jax import workdir as workdir_lib
from ddad_jax.errors import UserError
from ddad_jax.export import card as card_lib, evaluate, onnx as onnx_lib, run as run_lib


def check_out_dir(run_dir: str, out_dir: str, force: bool) -> None:
    """UserError unless ``out_dir`` may receive the export: outside the run, and new, empty or
    (with ``force``) an earlier export."""
    if workdir_lib.is_remote(out_dir):
        raise UserError(f"--out {out_dir}: an export is written to a local directory (staged beside it, then "
                        "moved in); copy it to the bucket afterwards")
    run, out = workdir_lib.absolute(run_dir), os.path.realpath(out_dir)
    if not workdir_lib.is_remote(run):
        run = os.path.realpath(run)
    if run == out or run.startswith(out + os.sep):
        raise UserError(f"--out {out_dir} holds the run itself; pick a directory outside {run_dir}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out_dir} is a file; pick a directory")
    if os.path.isdir(out) and os.listdir(out):
        if not force:
            raise UserError(f"--out {out_dir} exists; pass --force to replace it, or pick another --out "
                            "(nothing was changed)")
        if not os.path.exists(os.path.join(out, card_lib.STUDENT_CARD)):  # --force replaces an export, nothing else
            raise UserError(f"--out {out_dir} exists and is not a student export (no {card_lib.STUDENT_CARD}); "
                            "not replacing it, even with --force; pick another --out")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(staging: str, out_dir: str) -> None:
    """Moves the finished ``staging`` into ``out_dir``'s place (the old one removed only after)."""
    old = None
    if os.path.exists(out_dir):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(out_dir))
        os.replace(out_dir, os.path.join(old, "d"))
    os.chmod(staging, 0o755 & ~_umask())  # mkdtemp's 0700 would hide the export from other users
    os.replace(staging, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def export_student(run_dir: str, out_dir: str, onnx: bool = False, int8: bool = False,
                   calibration_images: int = 512, force: bool = False, seed: int = 0,
                   check_images: int = 64, test_data_dir: Optional[str] = None,
                   calibration: str = onnx_lib.AUTO) -> Dict[str, Any]:
    """Exports the final student of ``run_dir`` into ``out_dir`` (a new directory, or an
    existing one replaced only with ``force``; written elsewhere first, then moved in).

    Always ``student/`` + ``student.json``. ``onnx``: ``student_fp32.onnx``, its logits
    compared with JAX's on ``check_images`` random inputs. ``int8`` (implies ``onnx``):
    ``student_int8.onnx`` calibrated on ``calibration_images`` images of the run's final
    generator by ``calibration`` (``onnx.CALIBRATIONS``, or "auto": each, keeping the one whose
    top-1 agreement with fp32 on as many other generator images is highest); that agreement is
    recorded.
    ``test_data_dir`` (not None; '' = tfds's default): each exported model's accuracy on the
    dataset's prepared test split there -- after the fact, for a run that had no data (it is
    an error, before anything is written, when the split is not there).
    Returns what was written and measured (also recorded in ``out_dir/student.json``)."""
    onnx = onnx or int8
    if int8 and calibration_images < 1:
        raise UserError(f"--calibration_images must be >= 1, got {calibration_images}")
    onnx_lib.check_calibration(calibration)
    check_out_dir(run_dir, out_dir, force)
    identity, summary = run_lib.read_run(run_dir)
    if int8:  # the generator the card describes, before anything is written
        run_lib.calibration_generator(run_dir, identity)
    test_set = None
    if test_data_dir is not None:  # preprocessed as the student's card says (a teacher's own, if it had one)
        saved = run_lib.saved_card(run_dir)
        test_set = evaluate.load_test_split(summary["dataset"], test_data_dir, saved and card_lib.card_spec(saved))
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=os.path.dirname(out_dir))
    try:
        result = _write_export(run_dir, staging, identity, summary, onnx, int8, calibration_images, seed,
                               check_images, test_set, calibration)
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result["out_dir"] = out_dir
    result["files"] = {name: os.path.join(out_dir, name) for name in result["files"]}
    return result


def _write_export(run_dir, staging, identity, summary, onnx, int8, calibration_images, seed, check_images,
                  test_set=None, calibration=onnx_lib.AUTO):
    """Writes the export into ``staging``; returns what ``export_student`` returns."""
    card = run_lib.write_student(run_dir, summary, staging)
    result: Dict[str, Any] = {"files": [card_lib.STUDENT_SUBDIR, card_lib.STUDENT_CARD],
                              "architecture": card["architecture"], "student_acc": card.get("student_acc"),
                              "method": identity.get("kind")}
    exports: Dict[str, Any] = {}
    if onnx:
        exports["onnx_fp32"] = onnx_lib.write_fp32(staging, card, seed, check_images)
        result["files"].append(onnx_lib.FP32_ONNX)
        result["max_abs_logit_diff_fp32"] = exports["onnx_fp32"]["max_abs_logit_diff_vs_jax"]
    if int8:
        t0 = time.time()
        # one draw: the first half calibrates, the second measures the agreement with fp32
        images, source = run_lib.generator_images(run_dir, 2 * calibration_images, seed=seed)
        exports["onnx_int8"] = onnx_lib.write_int8(staging, images[:calibration_images], images[calibration_images:],
                                                   source, started=t0, method=calibration)
        result["files"].append(onnx_lib.INT8_ONNX)
        result["calibration_images"] = calibration_images
        result["int8_top1_agreement_with_fp32"] = exports["onnx_int8"]["top1_agreement_with_fp32"]
        result["calibration_method"] = exports["onnx_int8"]["calibration"]["method"]
    card = {**card, "exports": exports, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if test_set is not None:  # measured at export on the real test split: {jax, onnx_fp32, onnx_int8}
        card["test_accuracy"] = result["test_accuracy"] = evaluate.accuracies(staging, card, test_set)
    card_lib.write_card(staging, card)
    result["card"] = card
    return result
