"""The distilled Fashion-MNIST student out, edge-ready: ONNX fp32 and int8 against JAX.

    python benchmarks/fmnist_export.py                 # the README's pipeline (teacher, DDAD) into --out, then export
    python benchmarks/fmnist_export.py --run=RUN       # a finished DDAD run instead
    python benchmarks/fmnist_export.py --out DIR       # collect an interrupted invocation
    python benchmarks/fmnist_export.py --smoke         # end to end in a minute at tiny sizes: results into
                                                       # --results DIR (default a temp dir), never the README

Without ``--run`` it trains the seeded LeNet-5 (BN) teacher (``configs/teacher.py:fashion_mnist``)
and distils it with DDAD (``configs/fmnist_lenet5.py``), as the README's quick start and
``benchmarks/fmnist_ddad.py`` do. Then ``ddad_jax.export.export_student(RUN, OUT/export,
int8=True)``: the student as ``student_fp32.onnx`` and ``student_int8.onnx`` (static int8,
calibrated on ``--calibration_images`` images of the run's own generator: no real image).

Measured on the real Fashion-MNIST test split: top-1 accuracy of the JAX student, of ONNX
fp32 and of ONNX int8; the largest |logit difference| between JAX and ONNX fp32; the file
sizes; latency: one image (batch 1), onnxruntime's CPU provider with 1 intra-op thread, median
of ``--repeats`` runs after 20 warm-up runs. Writes ``benchmarks/results/fmnist_export.json``,
its Markdown and the README table between the ``fmnist_export`` markers (only when the
results go to ``benchmarks/results``).
"""

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import REPO, commit, fmnist_teacher, parse_args, publish, run_once, run_stage  # noqa: E402  pylint: disable=wrong-import-position

NAME, TITLE = "fmnist_export", "The distilled Fashion-MNIST student as ONNX, fp32 and int8"
KEYS = ("acc_jax", "acc_onnx_fp32", "acc_onnx_int8", "bytes_fp32", "bytes_int8", "latency_ms_fp32",
        "latency_ms_int8", "max_abs_logit_diff_fp32")
WARMUP = 20
# --smoke: few calibration images, test images and timed runs; each stage at its config's smoke size
SMOKE = {"calibration_images": 16, "repeats": 20, "eval_examples": 500}
LATENCY = "batch 1, onnxruntime CPUExecutionProvider with 1 intra-op thread, median of {repeats} runs after {warmup} warm-up runs"


def distil(out: str, seed: int) -> str:
    """The README's pipeline under ``out``: a seeded teacher, then DDAD's own protocol."""
    teacher_dir = fmnist_teacher(out, seed)
    workdir = os.path.join(out, f"ddad_seed{seed}")
    run_once(["-m", "experiments.fashion_mnist", "--config=configs/fmnist_lenet5.py", f"--workdir={workdir}",
              f"--config.teacher_dir={teacher_dir}", f"--config.seed={seed}"], workdir)
    return workdir


def latency_ms(sess, image, repeats: int) -> float:
    """Median wall milliseconds of one ``sess.run`` on a single image."""
    from ddad_jax.export.onnx import INPUT_NAME  # pylint: disable=import-outside-toplevel
    feed = {INPUT_NAME: image}
    for _ in range(WARMUP):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def measure(run_dir: str, export_dir: str, data_dir, calibration_images: int, repeats: int,
            eval_examples: int = -1) -> dict:
    """Exports ``run_dir``'s student into ``export_dir`` and measures it (see the module docstring)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import onnxruntime  # pylint: disable=import-outside-toplevel
    from ddad_jax import data, export  # pylint: disable=import-outside-toplevel
    from ddad_jax.export import evaluate, onnx as export_onnx  # pylint: disable=import-outside-toplevel

    result = export.export_student(run_dir, export_dir, int8=True, calibration_images=calibration_images,
                                   force=True)
    card = result["card"]
    spec = data.get_spec(card["dataset"])
    images, labels = data.load_split(spec, "test", data_dir)
    if eval_examples > 0:
        images, labels = images[:eval_examples], labels[:eval_examples]
    x = np.asarray(data.normalize(images, spec), np.float32)
    by_model = evaluate.exported_logits(export_dir, card, x)
    jax_logits, logits = by_model["jax"], {"fp32": by_model["onnx_fp32"], "int8": by_model["onnx_int8"]}
    paths = {k: result["files"][f] for k, f in (("fp32", export_onnx.FP32_ONNX), ("int8", export_onnx.INT8_ONNX))}
    accuracy = lambda z: float(np.mean(z.argmax(-1) == labels))
    teacher = card.get("teacher") or {}
    return {
        "acc_jax": accuracy(jax_logits),
        "acc_onnx_fp32": accuracy(logits["fp32"]),
        "acc_onnx_int8": accuracy(logits["int8"]),
        "bytes_fp32": os.path.getsize(paths["fp32"]),
        "bytes_int8": os.path.getsize(paths["int8"]),
        "latency_ms_fp32": latency_ms(export_onnx.session(paths["fp32"], threads=1), x[:1], repeats),
        "latency_ms_int8": latency_ms(export_onnx.session(paths["int8"], threads=1), x[:1], repeats),
        "max_abs_logit_diff_fp32": float(np.max(np.abs(logits["fp32"] - jax_logits))),
        "max_abs_logit_diff_on": f"the {len(x)} test images (JAX student vs ONNX fp32)",
        "int8_top1_agreement_with_fp32_test": float(np.mean(logits["int8"].argmax(-1) == logits["fp32"].argmax(-1))),
        "int8_top1_agreement_with_fp32_generator": result["int8_top1_agreement_with_fp32"],
        "test_examples": len(x),
        "student": card["architecture"],
        "student_acc_in_run": card.get("student_acc"),
        "teacher": teacher.get("model"),
        "teacher_acc": teacher.get("test_acc"),
        "run": os.path.abspath(run_dir),
        "export_dir": os.path.abspath(export_dir),
        "calibration_images": calibration_images,
        "calibration": "images of the run's final generator (no real images); int8 weights per channel, QDQ",
        "latency_method": LATENCY.format(repeats=repeats, warmup=WARMUP),
        "onnxruntime": onnxruntime.__version__,
    }


def markdown(r: dict) -> str:
    pct = lambda v: f"{100 * v:.2f}"
    kb = lambda b: f"{b / 1024:.1f}"
    lines = [
        f"Protocol: Fashion-MNIST, the DDAD student ({r['student']}) of a LeNet-5 (BN) teacher "
        f"({pct(r['teacher_acc']) if r.get('teacher_acc') is not None else '?'} %), exported with "
        "`python -m ddad_jax.export --int8`; accuracy on the "
        f"{r['test_examples']} real test images. The int8 model is calibrated on {r['calibration_images']} images "
        "of the run's own generator (no real data).",
        "",
        "| student | file size (KB) | test accuracy (%) | latency, batch 1 (ms) |",
        "|---|---:|---:|---:|",
        f"| JAX (Flax, float32) | – | {pct(r['acc_jax'])} | – |",
        f"| ONNX fp32 | {kb(r['bytes_fp32'])} | {pct(r['acc_onnx_fp32'])} | {r['latency_ms_fp32']:.3f} |",
        f"| ONNX int8 (static, QDQ, per-channel) | {kb(r['bytes_int8'])} | {pct(r['acc_onnx_int8'])} "
        f"| {r['latency_ms_int8']:.3f} |",
        "",
        f"Largest |logit difference|, JAX vs ONNX fp32, on the test images: {r['max_abs_logit_diff_fp32']:.1e}. "
        f"int8 and fp32 agree on the top-1 class of {pct(r['int8_top1_agreement_with_fp32_test'])} % of the test "
        f"images. Latency: {r['latency_method']} (onnxruntime {r['onnxruntime']}). "
        f"Code: commit {r['commit']}; machine: {r['machine']}.",
        "",
        "Regenerate: `python benchmarks/fmnist_export.py`",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished DDAD run on Fashion-MNIST (default: run the README's pipeline)")
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "benchmarks", "export-" + time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--seed", type=int, default=0, help="the teacher's and DDAD's seed (without --run)")
    parser.add_argument("--calibration_images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1000, help="timed runs per model (batch 1)")
    parser.add_argument("--data_dir", default=None, help="where Fashion-MNIST is prepared (default: tfds's)")
    parser.add_argument("--eval_examples", type=int, default=-1, help="-1 = the whole test split")
    args = parse_args(parser, SMOKE, argv)
    os.makedirs(args.out, exist_ok=True)
    if args.run is None:
        run_stage(["-m", "ddad_jax.data.prepare", "fashion_mnist"], os.path.join(args.out, "prepare.log"))
        run_dir = distil(args.out, args.seed)
    else:
        run_dir = args.run
    from ddad_jax.errors import UserError  # pylint: disable=import-outside-toplevel
    try:
        result = measure(run_dir, os.path.join(args.out, "export"), args.data_dir, args.calibration_images,
                         args.repeats, args.eval_examples)
    except UserError as e:
        sys.exit(f"error: {e}")
    result.update(commit=commit(), machine=f"{platform.machine()}, {os.cpu_count()} CPU cores")
    missing = [k for k in KEYS if k not in result]
    assert not missing, missing
    print(publish(NAME, TITLE, markdown(result), result, NAME, directory=args.results))
    return result


if __name__ == "__main__":
    main()
