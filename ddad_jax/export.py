"""The distilled student out of a run: orbax + json card, ONNX, int8 calibrated on synthetic images.

Every finished distillation run (DDAD and the DDAD-shaped DAFL/DFAD/DFQ, the inversion
family, KD) leaves its final student next to its checkpoints, ready to ship:

* ``RUN/student/``: the student's variables (``{"params"[, "batch_stats"]}``), a standalone
  orbax checkpoint, as a teacher's ``teacher/``;
* ``RUN/student.json``: the card: architecture (a ``models`` registry name), input shape and
  how raw pixels become model input, classes, the teacher it came from, its test accuracy.

``export_student`` (CLI: ``python -m ddad_jax.export --run=RUN --out=DIR [--onnx] [--int8]
[--evaluate [--data_dir=D]]``)
copies both into DIR and, on request, writes ``student_fp32.onnx`` (jax2onnx, checked
against the JAX logits with onnxruntime) and ``student_int8.onnx`` (onnxruntime static
quantization, QDQ, per-channel weights). A data-free run has no real images to calibrate the
int8 ranges on, and needs none: the calibration images are drawn from the run's own final
generator, restored from its last checkpoint, exactly as the student saw them in training.
``--evaluate`` measures the JAX student and each ONNX file on the dataset's test split, where
one is prepared (a run with no data can be scored after the fact by whoever has the split).

Runs made before the student was exported at the end (no ``RUN/student/``) are exported from
their latest checkpoint and ``summary.json``. HiDFD is not exported: its student shares the
teacher's classifier (``ClassifierSharing``), not a network of the ``models`` registry.

onnx, onnxruntime and jax2onnx are the optional ``export`` extra; they are imported only
when ONNX is asked for.
"""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging as absl_logging

import ddad_jax
from ddad_jax import backends, checkpoints, data, models, workdir as workdir_lib
from ddad_jax.errors import UserError

STUDENT_SUBDIR, STUDENT_CARD = "student", "student.json"
FP32_ONNX, INT8_ONNX = "student_fp32.onnx", "student_int8.onnx"
CARD_FORMAT = "ddad_jax student card v1"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
EXPORTED_KINDS = ("ddad", "inversion", "kd")  # run kinds whose student is a registry classifier
CALIBRATION_KINDS = ("ddad",)  # run kinds with one generator that made every training image


# ---------------------------------------------------------------------------------------------
# the card and the end-of-run export

def class_names(dataset: str) -> Optional[list]:
    """The dataset's class names in label order, where ddad_jax knows them (None otherwise)."""
    if dataset == "fashion_mnist":
        from ddad_jax.data.fashion_mnist import CLASS_NAMES  # pylint: disable=import-outside-toplevel
        return list(CLASS_NAMES)
    if dataset == "cifar10":
        return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return None


def preprocessing(spec: data.DatasetSpec) -> Dict[str, Any]:
    """How raw uint8 pixels become the model's input, as ``data.normalize`` computes it."""
    pad = (spec.image_size - spec.source_size) // 2
    steps = [f"x = pixels / 255 (uint8 {spec.source_size}x{spec.source_size}x{spec.channels} -> float32 in [0, 1])"]
    if pad:
        steps.append(f"zero-pad {pad} pixels on every side, in [0, 1] space: "
                     f"{spec.source_size}x{spec.source_size} -> {spec.image_size}x{spec.image_size}")
    steps.append("x = (x - mean) / std, per channel (last axis)")
    return {"source_size": spec.source_size, "pad": pad, "scale": 1.0 / 255.0, "mean": list(spec.mean),
            "std": list(spec.std), "steps": steps}


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
        "num_classes": spec.num_classes,
        "class_names": class_names(summary["dataset"]),
        "output": "logits (num_classes), no softmax",
        "method": summary.get("method"),
        "student_acc": summary.get("student_acc"),
        "teacher": teacher,
        "ddad_jax": code_version(),
    }


def save_student(workdir: str, variables, summary: dict, spec: Optional[data.DatasetSpec] = None) -> None:
    """The end of a distillation run (``Run.export``): the final student as ``student/`` and
    its card ``student.json``, each replaced atomically. ``spec``: the run's dataset (a
    custom or in-memory one is not in the built-in table)."""
    checkpoints.save_variables(os.path.join(workdir, STUDENT_SUBDIR), jax.device_get(variables))
    card = {**student_card(summary, spec), "run_dir": os.path.abspath(workdir)}
    workdir_lib.write_atomically(os.path.join(workdir, STUDENT_CARD), json.dumps(card, indent=2) + "\n")


def load_student(directory: str, ops: Optional[backends.Ops] = None) -> Tuple[Any, dict, dict]:
    """(model, variables, card) of a student in ``directory`` (a run or an export DIR):
    ``model.apply(variables, x)`` gives the logits of normalised NHWC images ``x``."""
    card = _read_json(os.path.join(directory, STUDENT_CARD), "student card")
    model = models.get_classifier(card["architecture"], card["num_classes"], ops=ops)
    variables = _load_variables(os.path.join(directory, STUDENT_SUBDIR), model, card["input"]["shape_hwc"])
    return model, variables, card


def _load_variables(path: str, model, shape_hwc):
    target = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape_hwc)))
    try:
        return checkpoints.load_variables(path, dict(target))
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"student checkpoint {path} cannot be read as its card's architecture "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError:
        raise UserError(f"no {what} at {path}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable {what} ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a readable {what} (a JSON {type(value).__name__})")
    return value


# ---------------------------------------------------------------------------------------------
# reading a finished run

def read_run(run_dir: str) -> Tuple[dict, dict]:
    """(run.json, summary.json) of a finished distillation run; UserError otherwise."""
    if not os.path.isdir(run_dir):
        raise UserError(f"--run {run_dir} is not a directory")
    identity = _read_json(os.path.join(run_dir, workdir_lib.RUN_RECORD), "run record (run.json)")
    kind = identity.get("kind")
    if kind == "teacher":
        raise UserError(f"--run {run_dir} is a teacher run, not a distillation run; its export is "
                        f"{os.path.join(run_dir, 'teacher')}/")
    if kind == "hidfd":
        raise UserError(f"--run {run_dir} is a HiDFD run: its classifier-sharing student is not a registry "
                        "network and is not exported")
    if kind not in EXPORTED_KINDS:
        raise UserError(f"--run {run_dir} is a '{kind}' run; only {', '.join(EXPORTED_KINDS)} runs are exported")
    if not os.path.exists(os.path.join(run_dir, "summary.json")):
        raise UserError(f"--run {run_dir} is not finished (no summary.json); rerun its command to finish it")
    return identity, _read_json(os.path.join(run_dir, "summary.json"), "run summary")


def final_state(run_dir: str) -> Tuple[int, Any]:
    """(step, state) of a run's latest checkpoint, restored as saved (nested dicts of numpy
    arrays, on one device whatever devices saved it): no config or data needed to read it."""
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    directory = os.path.abspath(os.path.join(run_dir, "checkpoints"))
    if not os.path.isdir(directory):
        raise UserError(f"--run {run_dir} has no checkpoints/ to read the final state from")
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns that a read-only manager saves nothing
    try:
        options = ocp.CheckpointManagerOptions(create=False, read_only=True)
        manager = ocp.CheckpointManager(directory, options=options, item_handlers=ocp.StandardCheckpointHandler())
    except Exception as e:  # pylint: disable=broad-except
        absl_logging.set_verbosity(verbosity)
        raise UserError(f"cannot read the checkpoints of {run_dir} ({type(e).__name__})") from None
    try:
        step = manager.latest_step()
        if step is None:
            raise UserError(f"--run {run_dir} has no checkpoint in {directory}")
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        as_saved = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding) if hasattr(m, "dtype") else m,
            manager.item_metadata(step).tree)
        state = manager.restore(step, args=ocp.args.StandardRestore(as_saved))
    except UserError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise UserError(f"cannot read the latest checkpoint of {run_dir} ({type(e).__name__})") from None
    finally:
        manager.close()
        absl_logging.set_verbosity(verbosity)
    return int(step), jax.device_get(state)


def _variables(tree: dict) -> dict:
    v = {"params": tree["params"]}
    if tree.get("batch_stats"):
        v["batch_stats"] = tree["batch_stats"]
    return v


def _check_calibration_source(identity: dict) -> None:
    if identity["kind"] not in CALIBRATION_KINDS:
        raise UserError(f"--int8 calibrates on images of the run's generator, and a run of kind '{identity['kind']}' "
                        "has no generator that made its training images; export it without --int8")


def generator_images(run_dir: str, num_images: int, seed: int = 0) -> Tuple[np.ndarray, dict]:
    """``num_images`` normalised NHWC float32 images from a DDAD-shaped run's final generator
    (its latest checkpoint), drawn as in training: latents from ``synthesis.draw_latents``
    (with classes for a conditional generator), BatchNorm on batches of the run's batch size.
    Reads no dataset. Returns (images, where they came from)."""
    import ml_collections  # pylint: disable=import-outside-toplevel
    from ddad_jax import trainers, synthesis  # pylint: disable=import-outside-toplevel
    identity, _ = read_run(run_dir)
    _check_calibration_source(identity)
    config = ml_collections.ConfigDict(identity)
    spec = data.get_spec(config.dataset)
    hp = trainers.hyper(config, spec)
    step, state = final_state(run_dir)
    generator = models.get_generator(config.generator_channels, spec.image_size, spec.channels)
    gen_vars = _variables(state["generator"])
    batch = int(config.batch_size)
    draw = jax.jit(lambda v, z: generator.apply(v, z, train=True, mutable=["batch_stats"])[0])
    rng, out = jax.random.key(seed), []
    for i in range(-(-num_images // batch)):
        z, _ = synthesis.draw_latents(jax.random.fold_in(rng, i), hp.latent_dim, hp.num_classes, (batch,),
                                      balanced=hp.balanced_targets)
        out.append(np.asarray(draw(gen_vars, z)))
    images = np.concatenate(out)[:num_images].astype(np.float32)
    return images, {"source": "generator", "checkpoint_step": step, "seed": seed, "batch_size": batch}


# ---------------------------------------------------------------------------------------------
# ONNX

def onnx_model(model, variables, shape_hwc):
    """The student as an ONNX ModelProto: logits of normalised float32 NHWC images, batch
    dimension dynamic (``N``). ``model`` must use plain Flax ops (``backends.PLAIN``) so
    jax2onnx sees standard convolutions and pooling."""
    import jax2onnx  # pylint: disable=import-outside-toplevel
    quiet = logging.getLogger("onnx_ir")  # "value type ... not known" for every shape constant
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        proto = jax2onnx.to_onnx(lambda x: model.apply(variables, x, train=False), [("N", *shape_hwc)],
                                 model_name="student", input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    finally:
        quiet.setLevel(level)
    # jax2onnx 0.17 annotates some NCHW intermediates with NHWC shapes; onnxruntime rejects a
    # graph whose annotations disagree (ResNets: "Incompatible dimensions" at an Add) and
    # infers them itself anyway.
    del proto.graph.value_info[:]
    return proto


def session(path: str, threads: int = 0):
    """An onnxruntime CPU session on ``path`` (``threads`` > 0: that many intra-op threads)."""
    import onnxruntime as ort  # pylint: disable=import-outside-toplevel
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no shape-merge warnings
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_logits(sess, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """The logits an onnxruntime session gives for normalised NHWC ``images``, in batches."""
    return np.concatenate([sess.run(None, {INPUT_NAME: np.ascontiguousarray(images[i:i + batch], np.float32)})[0]
                           for i in range(0, len(images), batch)])


class GeneratorCalibration:
    """onnxruntime's calibration reader over synthetic images (made by ``generator_images``):
    ``get_next()`` gives ``{"image": batch}`` until they are used up. A subclass of
    ``onnxruntime.quantization.CalibrationDataReader`` (built by ``calibration_reader``)."""

    def __init__(self, images: np.ndarray, batch: int = 32):
        self.images, self.batch, self.position = np.asarray(images, np.float32), batch, 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self.position >= len(self.images):
            return None
        out = self.images[self.position:self.position + self.batch]
        self.position += self.batch
        return {INPUT_NAME: out}

    def rewind(self) -> None:
        self.position = 0


def calibration_reader(images: np.ndarray, batch: int = 32):
    """A ``GeneratorCalibration`` that onnxruntime accepts as a ``CalibrationDataReader``."""
    from onnxruntime.quantization import CalibrationDataReader  # pylint: disable=import-outside-toplevel
    cls = type("GeneratorCalibrationReader", (GeneratorCalibration, CalibrationDataReader), {})
    return cls(images, batch)


def quantize_int8(fp32_path: str, int8_path: str, images: np.ndarray) -> None:
    """Static post-training int8 quantization of ``fp32_path``: QDQ format, int8 weights per
    output channel, int8 activations with MinMax ranges calibrated on ``images``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static  # pylint: disable=import-outside-toplevel
    prepared = int8_path + ".pre.onnx"
    try:
        quant_pre_process(fp32_path, prepared)  # shape inference and graph clean-up, as onnxruntime advises
        quantize_static(prepared, int8_path, calibration_reader(images), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    finally:
        for leftover in (prepared, prepared + ".data"):
            if os.path.exists(leftover):
                os.remove(leftover)


# ---------------------------------------------------------------------------------------------
# the export

def _check_out_dir(run_dir: str, out_dir: str, force: bool) -> None:
    run, out = os.path.realpath(run_dir), os.path.realpath(out_dir)
    if run == out or run.startswith(out + os.sep):
        raise UserError(f"--out {out_dir} holds the run itself; pick a directory outside {run_dir}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out_dir} is a file; pick a directory")
    if os.path.isdir(out) and os.listdir(out):
        if not force:
            raise UserError(f"--out {out_dir} exists; pass --force to replace it, or pick another --out "
                            "(nothing was changed)")
        if not os.path.exists(os.path.join(out, STUDENT_CARD)):  # --force replaces an export, nothing else
            raise UserError(f"--out {out_dir} exists and is not a student export (no {STUDENT_CARD}); "
                            "not replacing it, even with --force; pick another --out")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_dir(staging: str, out_dir: str) -> None:
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
                   check_images: int = 64, test_data_dir: Optional[str] = None) -> Dict[str, Any]:
    """Exports the final student of ``run_dir`` into ``out_dir`` (a new directory, or an
    existing one replaced only with ``force``; written elsewhere first, then moved in).

    Always ``student/`` + ``student.json``. ``onnx``: ``student_fp32.onnx``, its logits
    compared with JAX's on ``check_images`` random inputs. ``int8`` (implies ``onnx``):
    ``student_int8.onnx`` calibrated on ``calibration_images`` images of the run's final
    generator; its top-1 agreement with fp32 measured on as many other generator images.
    ``test_data_dir`` (not None; '' = tfds's default): each exported model's accuracy on the
    dataset's prepared test split there -- after the fact, for a run that had no data (it is
    an error, before anything is written, when the split is not there).
    Returns what was written and measured (also recorded in ``out_dir/student.json``)."""
    onnx = onnx or int8
    if int8 and calibration_images < 1:
        raise UserError(f"--calibration_images must be >= 1, got {calibration_images}")
    _check_out_dir(run_dir, out_dir, force)
    identity, summary = read_run(run_dir)
    if int8:
        _check_calibration_source(identity)
    test_set = None if test_data_dir is None else _test_split(summary["dataset"], test_data_dir)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=os.path.dirname(out_dir))
    try:
        result = _write_export(run_dir, staging, identity, summary, onnx, int8, calibration_images, seed,
                               check_images, test_set)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result["out_dir"] = out_dir
    result["files"] = {name: os.path.join(out_dir, name) for name in result["files"]}
    return result


def _test_split(dataset: str, data_dir: str) -> Tuple[np.ndarray, np.ndarray, str]:
    """(normalised float32 test images, labels, where) of ``dataset``'s prepared test split."""
    spec = data.get_spec(dataset, data_dir or None)
    try:
        images, labels = data.load_split(spec, "test", data_dir or None)
    except UserError as e:  # ours: names the dataset, the directory and the command that prepares it
        raise UserError(f"--evaluate: {e}") from None
    except Exception as e:  # pylint: disable=broad-except  (tfds: not prepared, unreadable)
        where = data_dir or "tfds's default data dir"
        raise UserError(f"--evaluate: no prepared test split of {dataset} in {where} ({type(e).__name__}); "
                        f"prepare it (python -m ddad_jax.data.prepare {dataset}) or pass --data_dir") from None
    return np.asarray(data.normalize(images, spec), np.float32), np.asarray(labels), data_dir or "tfds default"


def exported_logits(directory: str, card: dict, x: np.ndarray) -> Dict[str, np.ndarray]:
    """Logits on ``x`` of the student in ``directory`` (``"jax"``) and of each ONNX file the
    card's ``exports`` name there (``"onnx_fp32"``, ``"onnx_int8"``)."""
    model = models.get_classifier(card["architecture"], card["num_classes"], ops=backends.PLAIN)
    variables = _load_variables(os.path.join(directory, STUDENT_SUBDIR), model, card["input"]["shape_hwc"])
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    logits = {"jax": np.concatenate([np.asarray(apply(variables, x[i:i + 1000])) for i in range(0, len(x), 1000)])}
    for key, entry in card.get("exports", {}).items():
        logits[key] = onnx_logits(session(os.path.join(directory, entry["file"])), x)
    return logits


def _write_export(run_dir, staging, identity, summary, onnx, int8, calibration_images, seed, check_images,
                  test_set=None):
    """Writes the export into ``staging``; returns what ``export_student`` returns."""
    student_dir = os.path.join(run_dir, STUDENT_SUBDIR)
    if os.path.exists(os.path.join(run_dir, STUDENT_CARD)) and os.path.isdir(student_dir):
        card = _read_json(os.path.join(run_dir, STUDENT_CARD), "student card")
        shutil.copytree(student_dir, os.path.join(staging, STUDENT_SUBDIR))
    else:  # a run made before students were exported at its end: its latest checkpoint
        step, state = final_state(run_dir)
        card = {**student_card(summary), "run_dir": os.path.abspath(run_dir), "from_checkpoint_step": step}
        checkpoints.save_variables(os.path.join(staging, STUDENT_SUBDIR), _variables(state["student"]))
    result: Dict[str, Any] = {"files": [STUDENT_SUBDIR, STUDENT_CARD], "architecture": card["architecture"],
                              "student_acc": card.get("student_acc"), "method": identity.get("kind")}
    exports: Dict[str, Any] = {}
    if onnx:
        exports["onnx_fp32"] = _write_fp32(staging, card, seed, check_images)
        result["files"].append(FP32_ONNX)
        result["max_abs_logit_diff_fp32"] = exports["onnx_fp32"]["max_abs_logit_diff_vs_jax"]
    if int8:
        exports["onnx_int8"] = _write_int8(run_dir, staging, calibration_images, seed)
        result["files"].append(INT8_ONNX)
        result["calibration_images"] = calibration_images
        result["int8_top1_agreement_with_fp32"] = exports["onnx_int8"]["top1_agreement_with_fp32"]
    card = {**card, "exports": exports, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if test_set is not None:  # measured at export on the real test split: {jax, onnx_fp32, onnx_int8}
        x, labels, where = test_set
        accuracy = {k: float(np.mean(z.argmax(-1) == labels)) for k, z in exported_logits(staging, card, x).items()}
        card["test_accuracy"] = result["test_accuracy"] = {"examples": int(len(labels)), "data_dir": where, **accuracy}
    workdir_lib.write_atomically(os.path.join(staging, STUDENT_CARD), json.dumps(card, indent=2) + "\n")
    result["card"] = card
    return result


def _write_fp32(staging: str, card: dict, seed: int, check_images: int) -> Dict[str, Any]:
    """``student_fp32.onnx`` of the student in ``staging``, checked against JAX on random inputs."""
    t0, shape = time.time(), card["input"]["shape_hwc"]
    model = models.get_classifier(card["architecture"], card["num_classes"], ops=backends.PLAIN)
    variables = _load_variables(os.path.join(staging, STUDENT_SUBDIR), model, shape)
    path = os.path.join(staging, FP32_ONNX)
    with open(path, "wb") as f:
        f.write(onnx_model(model, variables, shape).SerializeToString())
    x = np.asarray(jax.random.normal(jax.random.key(seed + 1), (check_images, *shape)), np.float32)
    want = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    diff = float(np.max(np.abs(onnx_logits(session(path), x) - want)))
    return {"file": FP32_ONNX, "bytes": os.path.getsize(path),
            "input": {"name": INPUT_NAME, "shape": ["N", *shape], "dtype": "float32",
                      "layout": "NHWC, normalised as in preprocessing"},
            "output": {"name": OUTPUT_NAME, "shape": ["N", card["num_classes"]]},
            "max_abs_logit_diff_vs_jax": diff, "checked_on": f"{check_images} N(0, 1) images",
            "seconds": round(time.time() - t0, 1)}


def _write_int8(run_dir: str, staging: str, calibration_images: int, seed: int) -> Dict[str, Any]:
    """``student_int8.onnx`` from ``staging``'s fp32 model, calibrated on the run's generator."""
    t0 = time.time()
    fp32_path, int8_path = os.path.join(staging, FP32_ONNX), os.path.join(staging, INT8_ONNX)
    # one draw: the first half calibrates, the second measures the agreement with fp32
    images, source = generator_images(run_dir, 2 * calibration_images, seed=seed)
    calib, held_out = images[:calibration_images], images[calibration_images:]
    quantize_int8(fp32_path, int8_path, calib)
    fp32_top1 = onnx_logits(session(fp32_path), held_out).argmax(-1)
    int8_top1 = onnx_logits(session(int8_path), held_out).argmax(-1)
    return {"file": INT8_ONNX, "bytes": os.path.getsize(int8_path),
            "quantization": "onnxruntime quantize_static: QDQ, int8 weights per channel, int8 activations, "
                            "MinMax calibration",
            "calibration": {"images": calibration_images, **source,
                            "data": "synthetic: the run's final generator, no real images"},
            "top1_agreement_with_fp32": float(np.mean(fp32_top1 == int8_top1)),
            "agreement_on": f"{len(held_out)} other images of the same generator",
            "seconds": round(time.time() - t0, 1)}


# ---------------------------------------------------------------------------------------------
# the command line

def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m ddad_jax.export", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished distillation run's --workdir")
    parser.add_argument("--out", required=True, help="the export directory (new, or replaced with --force)")
    parser.add_argument("--onnx", action="store_true", help="also student_fp32.onnx")
    parser.add_argument("--int8", action="store_true", help="also student_int8.onnx (implies --onnx)")
    parser.add_argument("--calibration_images", type=int, default=512,
                        help="generator images the int8 ranges are calibrated on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration and check images")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--evaluate", action="store_true",
                        help="also measure each exported model on the dataset's prepared test split")
    parser.add_argument("--data_dir", default="", help="where that split is ('' = $TFDS_DATA_DIR or "
                        "~/tensorflow_datasets)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = export_student(args.run, args.out, onnx=args.onnx, int8=args.int8,
                                calibration_images=args.calibration_images, force=args.force, seed=args.seed,
                                test_data_dir=args.data_dir if args.evaluate else None)
    except UserError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        return 2
    acc = result["student_acc"]
    measured = "no test accuracy: the run had no data" if acc is None else f"test accuracy {acc:.4f}"
    lines = [f"exported {result['architecture']} ({measured}) to {result['out_dir']}: "
             + ", ".join(os.path.basename(p) for p in result["files"].values())]
    if "max_abs_logit_diff_fp32" in result:
        lines.append(f"  ONNX fp32: max |logit - JAX logit| = {result['max_abs_logit_diff_fp32']:.2e}")
    if "int8_top1_agreement_with_fp32" in result:
        lines.append(f"  ONNX int8: calibrated on {result['calibration_images']} generator images; top-1 agrees "
                     f"with fp32 on {100 * result['int8_top1_agreement_with_fp32']:.1f} % of other generator images")
    if "test_accuracy" in result:
        t = result["test_accuracy"]
        lines.append(f"  on {t['examples']} test images: " + ", ".join(
            f"{name} {100 * t[key]:.2f} %" for key, name in (("jax", "JAX"), ("onnx_fp32", "ONNX fp32"),
                                                             ("onnx_int8", "ONNX int8")) if key in t))
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
