"""The student as ONNX: fp32 (jax2onnx, checked against the JAX logits with onnxruntime) and
int8 (onnxruntime static quantization, QDQ, per-channel weights) calibrated on images the
caller hands over -- the export's are the run's own generator's, so no real data is needed.

onnx, onnxruntime and jax2onnx are the optional ``export`` extra; they are imported only
when a function here needs them.
"""

import contextlib
import io
import logging
import os
import time
from typing import Any, Dict, Optional

import jax
import numpy as np

from ddad_jax import backends
from ddad_jax.errors import UserError
from ddad_jax.export import card as card_lib

FP32_ONNX, INT8_ONNX = "student_fp32.onnx", "student_int8.onnx"
INPUT_NAME, OUTPUT_NAME = "image", "logits"


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
    """onnxruntime's calibration reader over synthetic images (``run.generator_images``):
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


# Activation-range calibrations onnxruntime offers, as --calibration names them. "minmax" takes each
# activation's observed extremes; "percentile" (99.999 %) and "entropy" (KL-optimal threshold) clip
# rare outliers, which a generator's images -- drawn to sit where student and teacher disagree --
# have more of than real ones, and which otherwise widen a range at the cost of every typical value.
CALIBRATIONS = ("minmax", "percentile", "entropy")
AUTO = "auto"  # each of CALIBRATIONS, kept: the best top-1 agreement with fp32 on held-out generator images


def quantize_int8(fp32_path: str, int8_path: str, images: np.ndarray, method: str = "minmax") -> None:
    """Static post-training int8 quantization of ``fp32_path``: QDQ format, int8 weights per
    output channel, int8 activations with ranges calibrated on ``images`` by ``method`` (one of
    ``CALIBRATIONS``)."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,  # pylint: disable=import-outside-toplevel
                                          quantize_static)
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    prepared = int8_path + ".pre.onnx"
    try:
        quant_pre_process(fp32_path, prepared)  # shape inference and graph clean-up, as onnxruntime advises
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
            quantize_static(prepared, int8_path, calibration_reader(images), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calibrate)
    finally:
        for leftover in (prepared, prepared + ".data"):
            if os.path.exists(leftover):
                os.remove(leftover)


def top1_agreement(path_a: str, path_b: str, images: np.ndarray) -> float:
    """The fraction of ``images`` on which two ONNX models pick the same class."""
    return float(np.mean(onnx_logits(session(path_a), images).argmax(-1)
                         == onnx_logits(session(path_b), images).argmax(-1)))


def check_calibration(method: str) -> None:
    if method != AUTO and method not in CALIBRATIONS:
        raise UserError(f"unknown int8 calibration '{method}'; known: {AUTO}, {', '.join(CALIBRATIONS)}")


def write_fp32(directory: str, card: dict, seed: int, check_images: int) -> Dict[str, Any]:
    """``student_fp32.onnx`` of the student in ``directory``, checked against JAX on
    ``check_images`` random inputs; returns the card's ``exports`` entry for it."""
    t0, shape = time.time(), card["input"]["shape_hwc"]
    model = card_lib.student_model(card, backends.PLAIN)
    variables = card_lib.load_variables(directory, model, card)
    path = os.path.join(directory, FP32_ONNX)
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


def write_int8(directory: str, calibration: np.ndarray, held_out: np.ndarray, source: dict,
               started: Optional[float] = None, method: str = AUTO) -> Dict[str, Any]:
    """``student_int8.onnx`` from ``directory``'s fp32 model, calibrated on the generator images
    ``calibration`` (drawn as ``source`` says) by ``method``; its top-1 agreement with fp32
    measured on ``held_out``. ``method = "auto"`` quantizes with each of ``CALIBRATIONS`` and
    keeps the one that agrees best with fp32 on ``held_out`` (the first of equals): chosen on
    synthetic images only, as a data-free export must. Returns the card's ``exports`` entry
    (``seconds`` from ``started``), with every tried calibration's agreement."""
    check_calibration(method)
    t0 = time.time() if started is None else started
    fp32_path, int8_path = os.path.join(directory, FP32_ONNX), os.path.join(directory, INT8_ONNX)
    agreement: Dict[str, float] = {}
    chosen = None
    for name in CALIBRATIONS if method == AUTO else (method,):
        candidate = f"{int8_path}.{name}"
        try:
            quantize_int8(fp32_path, candidate, calibration, name)
            agreement[name] = top1_agreement(fp32_path, candidate, held_out)
            if chosen is None or agreement[name] > agreement[chosen]:  # strictly better: the first of equals stays
                os.replace(candidate, int8_path)
                chosen = name
        finally:
            if os.path.exists(candidate):
                os.remove(candidate)
    return {"file": INT8_ONNX, "bytes": os.path.getsize(int8_path),
            "quantization": "onnxruntime quantize_static: QDQ, int8 weights per channel, int8 activations, "
                            f"{chosen} calibration",
            "calibration": {"images": len(calibration), "method": chosen, "asked": method, **source,
                            "data": "synthetic: the run's final generator, no real images"},
            "top1_agreement_with_fp32": agreement[chosen],
            "top1_agreement_with_fp32_by_calibration": agreement,
            "agreement_on": f"{len(held_out)} other images of the same generator",
            "seconds": round(time.time() - t0, 1)}
