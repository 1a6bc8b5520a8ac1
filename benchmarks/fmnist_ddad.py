"""Fashion-MNIST DDAD benchmark: LeNet-5 (BN) teacher, then DDAD into LeNet-5-half, per seed.

    python benchmarks/fmnist_ddad.py            # teacher + seeds 0 1 2, on this machine

Each stage runs as a user would run it (``python -m experiments.fashion_mnist ...``) in a
fresh workdir under ``runs/benchmarks/<timestamp>/``. Writes
``benchmarks/results/fmnist_ddad.json`` ({"teacher_acc", "student_acc": [per seed],
"wall_s": [per seed], "command", ...}), ``benchmarks/results/fmnist_ddad.md`` and the
table between the ``fmnist_ddad`` markers in README.md.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import REPO, publish  # noqa: E402  pylint: disable=wrong-import-position


def run(args, log_path):
    """Runs one stage, streaming its output to a log; returns wall seconds."""
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1"})
    if proc.returncode:
        sys.exit(f"error: stage failed ({' '.join(args)}); see {log_path}")
    return time.time() - t0


def time_to_accuracy(metrics_path, start, targets=(0.80, 0.85)):
    """Seconds from launching a stage until its student first reached each target test
    accuracy (evaluated every epoch), or None if it never did."""
    first = {t: None for t in targets}
    for line in open(metrics_path):
        row = json.loads(line)
        acc = row.get("test/student_accuracy")
        for t in targets:
            if acc is not None and acc >= t and first[t] is None:
                first[t] = row["time"] - start
    return [first[t] for t in targets]


def _minutes(seconds):
    return "not reached" if seconds is None else f"{seconds / 60:.1f}"


def markdown(result) -> str:
    acc = result["student_acc"]
    slots = result.get("replay_slots", 0)
    method = f"data-free DDAD replaying the last {slots} generated batches" if slots else "data-free DDAD"
    if result.get("class_weight"):
        method += f" with a class-conditional generator (class_weight {result['class_weight']:g})"
    finetune = (f" then {result['finetune_iterations']} of student-only fine-tuning on the frozen generator"
                if result.get("finetune_iterations") else "")
    made = (f"reused from `{result['teacher_reused_from']}`" if result.get("teacher_reused_from")
            else f"{result['teacher_wall_s'] / 60:.1f} min")
    rows = [f"| {s} | {a * 100:.2f} | {w / 60:.1f} | {_minutes(t[0])} | {_minutes(t[1])} |"
            for s, a, w, t in zip(result["seeds"], acc, result["wall_s"], result["time_to_80_85_s"])]
    return "\n".join([
        f"Teacher: {result['teacher']} (BN), test accuracy **{result['teacher_acc'] * 100:.2f} %** "
        f"({made}). Student: {result['student']}, {method}, "
        f"{result['iterations']} iterations{finetune}. Machine: {result['machine']}.",
        "",
        "| seed | student test accuracy (%) | wall-clock (min) | minutes to 80 % | minutes to 85 % |",
        "|---:|---:|---:|---:|---:|",
        *rows,
        f"| **mean** | **{statistics.mean(acc) * 100:.2f}** (± {statistics.pstdev(acc) * 100:.2f}) "
        f"| {statistics.median(result['wall_s']) / 60:.1f} (median) | | |",
        "",
        f"Regenerate: `{result['command']}`",
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "benchmarks", time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--teacher_dir", default="", help="reuse a trained teacher instead of training one")
    parser.add_argument("ddad_overrides", nargs="*", help="extra --config.X=Y flags for the DDAD runs")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    run(["-m", "ddad_jax.data.prepare", "fashion_mnist"], os.path.join(args.out, "prepare.log"))

    teacher_dir, teacher_wall = args.teacher_dir, 0.0
    if not teacher_dir:
        teacher_dir = os.path.join(args.out, "teacher")
        teacher_wall = run(["-m", "experiments.fashion_mnist", "--config=configs/teacher.py:fashion_mnist",
                            f"--workdir={teacher_dir}"], os.path.join(args.out, "teacher.log"))
    teacher = json.load(open(os.path.join(teacher_dir, "teacher.json")))
    print(f"teacher {teacher['model']}: {teacher['test_acc']:.4f}", flush=True)

    accs, walls, reach, summary = [], [], [], {}
    for seed in args.seeds:
        workdir = os.path.join(args.out, f"ddad_seed{seed}")
        start = time.time()
        wall = run(["-m", "experiments.fashion_mnist", "--config=configs/ddad.py:fashion_mnist",
                    f"--workdir={workdir}", f"--config.teacher_dir={teacher_dir}", f"--config.seed={seed}",
                    *args.ddad_overrides], os.path.join(args.out, f"ddad_seed{seed}.log"))
        summary = json.load(open(os.path.join(workdir, "summary.json")))
        accs.append(summary["student_acc"])
        reach.append(time_to_accuracy(os.path.join(workdir, "metrics.jsonl"), start))
        walls.append(wall)
        print(f"seed {seed}: student {summary['student_acc']:.4f} in {wall / 60:.1f} min", flush=True)

    reused = os.path.relpath(args.teacher_dir, REPO) if args.teacher_dir else ""
    command = ("python benchmarks/fmnist_ddad.py" + (f" --teacher_dir={reused}" if reused else "")
               + "".join(f" {o}" for o in args.ddad_overrides))
    result = {"teacher_acc": teacher["test_acc"], "student_acc": accs, "wall_s": walls, "command": command,
              "time_to_80_85_s": reach,
              "teacher": teacher["model"], "student": summary["student"], "seeds": args.seeds,
              "teacher_wall_s": teacher_wall, "iterations": summary["iterations"],
              "finetune_iterations": summary.get("finetune_iterations", 0),
              "replay_slots": summary.get("replay_slots", 0), "teacher_reused_from": reused,
              "class_weight": summary.get("class_weight", 0.0),
              "mean_student_acc": statistics.mean(accs),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {summary['devices']} JAX device(s)"}
    with open(os.path.join(args.out, "result.json"), "w") as f:  # the run keeps a copy (time_to_accuracy.py)
        json.dump(result, f, indent=2)
    print(publish("fmnist_ddad", "Fashion-MNIST, data-free DDAD", markdown(result), result, "fmnist_ddad"))


if __name__ == "__main__":
    main()
