"""The distilled Fashion-MNIST student out, edge-ready: ONNX fp32 and int8 against JAX, over seeds.

    python benchmarks/fmnist_export.py                 # seeds 0-2: the README's pipeline (teacher, DDAD) into --out, then export
    python benchmarks/fmnist_export.py --runs R0 R1 R2 # finished DDAD runs instead (each run's seed from its run.json)
    python benchmarks/fmnist_export.py --out DIR       # collect an interrupted invocation
    python benchmarks/fmnist_export.py --smoke         # end to end in a minute at tiny sizes (seed 0): results into
                                                       # --results DIR (default a temp dir), never the README

Without ``--runs`` it trains, for each of ``--seeds``, the seeded LeNet-5 (BN) teacher
(``configs/teacher.py:fashion_mnist``) and distils it with DDAD (``configs/fmnist_lenet5.py``), as
the README's quick start and ``benchmarks/fmnist_ddad.py`` do. Then per run
``ddad_jax.export.export_student(RUN, OUT/export_seedS, int8=True)``: the student as
``student_fp32.onnx`` and ``student_int8.onnx`` (static int8, calibrated on
``--calibration_images`` images of the run's own generator, no real image; the calibration
chosen by top-1 agreement with fp32 on other generator images, ``--calibration=auto``).

Measured per seed on the real Fashion-MNIST test split: top-1 accuracy of the JAX student, of
ONNX fp32 and of ONNX int8, and the fp32 -> int8 change; over the seeds its mean ± sample std.
Also the largest |logit difference| between JAX and ONNX fp32, the file sizes, and latency: one
image (batch 1), onnxruntime's CPU provider with 1 intra-op thread, median of ``--repeats`` runs
after 20 warm-up runs. Writes ``benchmarks/results/fmnist_export.json`` (a per-seed row each:
``seed``, ``acc_jax``, ``acc_onnx_fp32``, ``acc_onnx_int8``, ...), its Markdown and the README
table between the ``fmnist_export`` markers (only when the results go to ``benchmarks/results``).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import REPO, commit, fmnist_teacher, machine, parse_args, publish, run_once, run_stage  # noqa: E402  pylint: disable=wrong-import-position

NAME, TITLE = "fmnist_export", "The distilled Fashion-MNIST student as ONNX, fp32 and int8"
KEYS = ("seed", "acc_jax", "acc_onnx_fp32", "acc_onnx_int8", "bytes_fp32", "bytes_int8", "latency_ms_fp32",
        "latency_ms_int8", "max_abs_logit_diff_fp32")  # in every per-seed row
WARMUP = 20
# --smoke: few calibration images, test images and timed runs; each stage at its config's smoke size
SMOKE = {"seeds": [0], "calibration_images": 16, "repeats": 20, "eval_examples": 500}
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
    from ddad_jax.export import card as card_lib, evaluate, onnx as export_onnx  # pylint: disable=import-outside-toplevel

    result = export.export_student(run_dir, export_dir, int8=True, calibration_images=calibration_images,
                                   force=True)
    card = result["card"]
    spec = card_lib.card_spec(card) or data.get_spec(card["dataset"])  # the teacher's preprocessing
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
        "calibration_method": result["calibration_method"],
        "int8_top1_agreement_with_fp32_generator_by_calibration":
            card["exports"]["onnx_int8"]["top1_agreement_with_fp32_by_calibration"],
        "latency_method": LATENCY.format(repeats=repeats, warmup=WARMUP),
        "onnxruntime": onnxruntime.__version__,
    }


def int8_change(row: dict) -> float:
    """ONNX int8's test accuracy minus ONNX fp32's, in points."""
    return 100.0 * (row["acc_onnx_int8"] - row["acc_onnx_fp32"])


def summarise(rows: list) -> dict:
    """The per-seed rows' figures over seeds: the fp32 -> int8 change (mean, sample std, the
    worst seed's) and the medians of what does not depend on the seed's weights (sizes, latency)."""
    changes = [int8_change(r) for r in rows]
    median = lambda k: statistics.median(r[k] for r in rows)
    return {
        "int8_change_points": changes,
        "int8_change_mean": statistics.mean(changes),
        "int8_change_std": statistics.stdev(changes) if len(changes) > 1 else None,
        "int8_change_worst": min(changes, key=lambda c: (-abs(c), c)),
        **{k: median(k) for k in ("bytes_fp32", "bytes_int8", "latency_ms_fp32", "latency_ms_int8")},
        "max_abs_logit_diff_fp32": max(r["max_abs_logit_diff_fp32"] for r in rows),
    }


def markdown(r: dict) -> str:
    rows = r["rows"]
    pct = lambda v: f"{100 * v:.2f}"
    kb = lambda b: f"{b / 1024:.1f}"
    seeds = ", ".join(str(row["seed"]) for row in rows)
    spread = (f"{r['int8_change_mean']:+.2f} ± {r['int8_change_std']:.2f}" if r["int8_change_std"] is not None
              else f"{r['int8_change_mean']:+.2f} (1 seed)")
    lines = [
        f"Protocol: Fashion-MNIST; per seed ({seeds}) a LeNet-5 (BN) teacher and its DDAD student "
        f"({rows[0]['student']}), the README's pipeline, exported with `python -m ddad_jax.export --int8`; "
        f"accuracy on the {rows[0]['test_examples']} real test images. The int8 model is calibrated on "
        f"{r['calibration_images']} images of the run's own generator (no real data); the calibration is chosen "
        "per student by top-1 agreement with fp32 on other generator images, never by test accuracy "
        "(docs/export.md).",
        "",
        "| seed | teacher (%) | JAX student (%) | ONNX fp32 (%) | ONNX int8 (%) | int8 − fp32 (points) | calibration |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        teacher = pct(row["teacher_acc"]) if row.get("teacher_acc") is not None else "?"
        lines.append(f"| {row['seed']} | {teacher} | {pct(row['acc_jax'])} | {pct(row['acc_onnx_fp32'])} "
                     f"| {pct(row['acc_onnx_int8'])} | {int8_change(row):+.2f} | {row['calibration_method']} |")
    lines += [
        "",
        f"fp32 → int8 over the {len(rows)} seed(s): **{spread} points** (mean ± sample std; the largest "
        f"change {r['int8_change_worst']:+.2f}).",
        "",
        "| model | file size (KB) | latency, batch 1 (ms) |",
        "|---|---:|---:|",
        f"| ONNX fp32 | {kb(r['bytes_fp32'])} | {r['latency_ms_fp32']:.3f} |",
        f"| ONNX int8 (static, QDQ, per-channel) | {kb(r['bytes_int8'])} | {r['latency_ms_int8']:.3f} |",
        "",
        f"Sizes and latencies are medians over the seeds. Largest |logit difference|, JAX vs ONNX fp32, on the "
        f"test images: {r['max_abs_logit_diff_fp32']:.1e}. Latency: {r['latency_method']} (onnxruntime "
        f"{r['onnxruntime']}). Code: students trained at commit {r['trained_at']}, exported and measured at commit "
        f"{r['commit']}; machine: {r['machine']}.",
        "",
        "Regenerate: `python benchmarks/fmnist_export.py`",
    ]
    return "\n".join(lines)


def run_seed(run_dir: str) -> int:
    """The seed a finished DDAD run was launched with (its ``run.json``)."""
    import json  # pylint: disable=import-outside-toplevel
    path = os.path.join(run_dir, "run.json")
    if not os.path.exists(path):
        sys.exit(f"error: {run_dir} is not a finished DDAD run (no run.json)")
    with open(path) as f:
        return int(json.load(f)["seed"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", metavar="RUN",
                        help="finished DDAD runs on Fashion-MNIST, one per seed (default: run the README's pipeline "
                             "for each of --seeds)")
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "benchmarks", "export-" + time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--runs_commit", default=None,
                        help="the commit --runs were trained at, recorded beside the figures (default: unknown)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="the teachers' and DDAD's seeds (without --runs); the int8 change is reported per seed")
    parser.add_argument("--calibration_images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1000, help="timed runs per model (batch 1)")
    parser.add_argument("--data_dir", default=None, help="where Fashion-MNIST is prepared (default: tfds's)")
    parser.add_argument("--eval_examples", type=int, default=-1, help="-1 = the whole test split")
    args = parse_args(parser, SMOKE, argv)
    os.makedirs(args.out, exist_ok=True)
    if args.runs is None:
        run_stage(["-m", "ddad_jax.data.prepare", "fashion_mnist"], os.path.join(args.out, "prepare.log"))
    from ddad_jax.errors import UserError  # pylint: disable=import-outside-toplevel
    rows = []
    for i, seed in enumerate(args.seeds if args.runs is None else range(len(args.runs))):
        run_dir = distil(args.out, seed) if args.runs is None else args.runs[i]
        seed = seed if args.runs is None else run_seed(run_dir)
        try:
            row = measure(run_dir, os.path.join(args.out, f"export_seed{seed}"), args.data_dir,
                          args.calibration_images, args.repeats, args.eval_examples)
        except UserError as e:
            sys.exit(f"error: {e}")
        rows.append({"seed": seed, **row, "int8_change_points": int8_change(row)})
        print(f"seed {seed}: JAX {100 * row['acc_jax']:.2f} %, ONNX fp32 {100 * row['acc_onnx_fp32']:.2f} %, "
              f"int8 {100 * row['acc_onnx_int8']:.2f} % ({int8_change(row):+.2f}; {row['calibration_method']})",
              flush=True)
    result = {"rows": rows, **summarise(rows), "calibration_images": args.calibration_images,
              "latency_method": rows[0]["latency_method"], "onnxruntime": rows[0]["onnxruntime"],
              "commit": commit(), "machine": machine(),
              "trained_at": commit() if args.runs is None else (args.runs_commit or "unknown (--runs)"),
              "command": "python benchmarks/fmnist_export.py"}
    missing = [k for k in KEYS for row in rows if k not in row]
    assert not missing, missing
    print(publish(NAME, TITLE, markdown(result), result, NAME, directory=args.results))
    return result


if __name__ == "__main__":
    main()
