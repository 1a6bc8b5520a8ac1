"""An engineer's path at 64x64, measured offline: a torchvision MobileNetV2 trained in PyTorch on
Fashion-MNIST upscaled to 64x64 with its own normalisation, imported with that preprocessing,
distilled by DDAD into a smaller MobileNetV2 with no data, exported to ONNX fp32 and int8.

    python benchmarks/fmnist64_torchvision.py            # seeds 0-2 into --out, then the tables
    python benchmarks/fmnist64_torchvision.py --out DIR  # collect an interrupted invocation
    python benchmarks/fmnist64_torchvision.py --smoke    # end to end at tiny sizes (seed 0), results into
                                                         # --results DIR (default a temp dir)

Per seed S, each stage a command a user runs:

1. ``python -m experiments.torch_teacher --model=mobilenet_v2_050 --resize=64 --mean=0.5 --std=0.5
   --seed=S``: torchvision's MobileNetV2 (width 0.5, one input channel) trained in PyTorch; its
   accuracy on the 10 000 test images, measured by PyTorch, is in ``torch_seedS.pt.json``;
2. ``python -m ddad_jax.import_teacher ... --resize=64 --mean=0.5 --std=0.5``: the same network in
   Flax, its accuracy measured again by ddad_jax on the same images;
3. ``python -m experiments.fashion_mnist --config=configs/fmnist64_torchvision.py``: DDAD into
   MobileNetV2 width 0.35 with no data (the test split only evaluates);
4. ``ddad_jax.export.export_student(..., int8=True)``: the student as ONNX fp32 and int8
   (calibrated on the run's generator images), measured as ``benchmarks/fmnist_export.py`` does.

Writes ``benchmarks/results/fmnist64_torchvision.{json,md}``: ``seeds`` and, per seed in the
same order, the teacher's accuracy in PyTorch and after import, the student's (JAX, ONNX fp32,
ONNX int8, all the final student's), file sizes, batch-1 latency and each stage's wall seconds.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import REPO, commit, machine, mean_std, parse_args, publish, run_once, run_stage  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks import fmnist_export  # noqa: E402  pylint: disable=wrong-import-position

NAME, TITLE = "fmnist64_torchvision", "A torchvision teacher at 64x64, imported, distilled without data, exported"
TEACHER, STUDENT, SIZE, MEAN, STD = "mobilenet_v2_050", "mobilenet_v2_035", 64, 0.5, 0.5
CONFIG = "configs/fmnist64_torchvision.py"
PER_SEED = ("teacher_torch_acc", "teacher_imported_acc", "acc_jax", "acc_onnx_fp32", "acc_onnx_int8",
            "bytes_fp32", "bytes_int8", "latency_ms_fp32", "latency_ms_int8", "torch_teacher_s", "import_s",
            "ddad_s", "export_s")
# --smoke: a teacher of one epoch on a few images, tiny calibration and timing, the DDAD stage at
# its config's smoke size (benchmarks/common.py)
SMOKE = {"seeds": [0], "torch_epochs": 1, "torch_train_examples": 256, "calibration_images": 16, "repeats": 20,
         "eval_examples": 500}


def torch_teacher(out: str, seed: int, epochs: int, train_examples: int) -> tuple:
    """Stage 1: (the .pt path, its record); collected if an earlier invocation wrote it."""
    path = os.path.join(out, f"torch_seed{seed}.pt")
    args = ["-m", "experiments.torch_teacher", f"--model={TEACHER}", f"--resize={SIZE}", f"--mean={MEAN}",
            f"--std={STD}", f"--seed={seed}", f"--epochs={epochs}", f"--out={path}"]
    if train_examples:
        args.append(f"--train_examples={train_examples}")
    run_once(args, path[:-3])
    with open(path + ".json") as f:
        return path, json.load(f)


def import_teacher(out: str, seed: int, state_dict: str) -> tuple:
    """Stage 2: (the teacher directory, its card, wall seconds)."""
    teacher_dir = os.path.join(out, f"teacher_seed{seed}")
    wall = run_once(["-m", "ddad_jax.import_teacher", f"--state_dict={state_dict}", f"--model={TEACHER}",
                     "--dataset=fashion_mnist", f"--resize={SIZE}", f"--mean={MEAN}", f"--std={STD}",
                     f"--out={teacher_dir}", "--force"], teacher_dir)
    with open(os.path.join(teacher_dir, "teacher.json")) as f:
        return teacher_dir, json.load(f), wall


def distil(out: str, seed: int, teacher_dir: str) -> tuple:
    """Stage 3: (the DDAD run, wall seconds)."""
    workdir = os.path.join(out, f"ddad_seed{seed}")
    wall = run_once(["-m", "experiments.fashion_mnist", f"--config={CONFIG}", f"--workdir={workdir}",
                     f"--config.teacher_dir={teacher_dir}", f"--config.seed={seed}"], workdir)
    return workdir, wall


def column(rows, key):
    return [r[key] for r in rows]


def markdown(r: dict) -> str:
    rows = r["rows"]
    pct = lambda v: f"{100 * v:.2f}" if v is not None else "?"
    lines = [
        f"Protocol: Fashion-MNIST resized bilinearly to {SIZE}x{SIZE}, normalised with mean {MEAN}, std {STD} (the "
        f"teacher's own preprocessing, stated at import). Per seed ({', '.join(map(str, r['seeds']))}): torchvision's "
        f"`mobilenet_v2(width_mult=0.5)` (one input channel) trained in PyTorch by `experiments/torch_teacher.py` "
        f"({rows[0]['torch_epochs']} epoch(s), Adam 1e-3, batch 128), imported as `{TEACHER}`, distilled by DDAD "
        f"(`{CONFIG}`) into `{STUDENT}` with no data, exported with `ddad_jax.export` (int8 calibrated on "
        f"{r['calibration_images']} generator images). Accuracy of the final student on the "
        f"{rows[0]['test_examples']} real test images.",
        "",
        "| seed | teacher, PyTorch (%) | teacher, imported (%) | student JAX (%) | ONNX fp32 (%) | ONNX int8 (%) "
        "| wall: teacher / import / DDAD / export (s) |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(f"| {row['seed']} | {pct(row['teacher_torch_acc'])} | {pct(row['teacher_imported_acc'])} "
                     f"| {pct(row['acc_jax'])} | {pct(row['acc_onnx_fp32'])} | {pct(row['acc_onnx_int8'])} "
                     f"| {row['torch_teacher_s']:.0f} / {row['import_s']:.0f} / {row['ddad_s']:.0f} / "
                     f"{row['export_s']:.0f} |")
    lines += [
        f"| mean ± std | {mean_std(r['teacher_torch_acc'])} | {mean_std(r['teacher_imported_acc'])} "
        f"| {mean_std(r['acc_jax'])} | {mean_std(r['acc_onnx_fp32'])} | {mean_std(r['acc_onnx_int8'])} | |",
        "",
        "| model | file size (KB) | latency, batch 1 (ms) |",
        "|---|---:|---:|",
        f"| student ONNX fp32 | {r['bytes_fp32'] / 1024:.1f} | {r['latency_ms_fp32']:.3f} |",
        f"| student ONNX int8 | {r['bytes_int8'] / 1024:.1f} | {r['latency_ms_int8']:.3f} |",
        "",
        f"Sizes and latencies: medians over the seeds; latency {r['latency_method']}. The imported teacher's "
        f"accuracy equals PyTorch's up to near-ties (largest difference {r['teacher_import_max_diff_points']:.2f} "
        f"points). Code: commit {r['commit']}; machine: {r['machine']}.",
        "",
        "Regenerate: `python benchmarks/fmnist64_torchvision.py`",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "benchmarks",
                                                      "fmnist64-" + time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--torch_epochs", type=int, default=2, help="the PyTorch teacher's epochs")
    parser.add_argument("--torch_train_examples", type=int, default=0, help="0 = all 60 000")
    parser.add_argument("--calibration_images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1000, help="timed runs per model (batch 1)")
    parser.add_argument("--data_dir", default=None, help="where Fashion-MNIST is prepared (default: tfds's)")
    parser.add_argument("--eval_examples", type=int, default=-1, help="-1 = the whole test split")
    args = parse_args(parser, SMOKE, argv)
    os.makedirs(args.out, exist_ok=True)
    run_stage(["-m", "ddad_jax.data.prepare", "fashion_mnist"], os.path.join(args.out, "prepare.log"))
    from ddad_jax.errors import UserError  # pylint: disable=import-outside-toplevel
    rows = []
    for seed in args.seeds:
        state_dict, trained = torch_teacher(args.out, seed, args.torch_epochs, args.torch_train_examples)
        teacher_dir, card, import_s = import_teacher(args.out, seed, state_dict)
        run_dir, ddad_s = distil(args.out, seed, teacher_dir)
        t0 = time.time()
        try:
            measured = fmnist_export.measure(run_dir, os.path.join(args.out, f"export_seed{seed}"), args.data_dir,
                                             args.calibration_images, args.repeats, args.eval_examples)
        except UserError as e:
            sys.exit(f"error: {e}")
        rows.append({"seed": seed, "teacher_torch_acc": trained["test_acc"], "teacher_imported_acc": card["test_acc"],
                     **measured, "torch_teacher_s": trained["train_s"], "torch_epochs": trained["epochs"],
                     "torch_train_examples": trained["train_examples"], "import_s": round(import_s, 1),
                     "ddad_s": round(ddad_s, 1), "export_s": round(time.time() - t0, 1)})
        print(f"seed {seed}: teacher {100 * trained['test_acc']:.2f} % (PyTorch), {100 * card['test_acc']:.2f} % "
              f"(imported); student {100 * measured['acc_jax']:.2f} % (JAX), {100 * measured['acc_onnx_int8']:.2f} % "
              "(int8)", flush=True)
    median = lambda k: statistics.median(column(rows, k))
    result = {"seeds": [r["seed"] for r in rows], **{k: column(rows, k) for k in PER_SEED},
              "teacher": TEACHER, "student": STUDENT, "image_size": SIZE, "mean": MEAN, "std": STD,
              "teacher_import_max_diff_points": max(abs(100 * (r["teacher_torch_acc"] - r["teacher_imported_acc"]))
                                                    for r in rows),
              **{k: median(k) for k in ("bytes_fp32", "bytes_int8", "latency_ms_fp32", "latency_ms_int8")},
              "rows": rows, "calibration_images": args.calibration_images,
              "latency_method": rows[0]["latency_method"], "commit": commit(), "machine": machine(),
              "command": "python benchmarks/fmnist64_torchvision.py"}
    print(publish(NAME, TITLE, markdown(result), result, NAME, directory=args.results))
    return result


if __name__ == "__main__":
    main()
