"""Time to accuracy on Fashion-MNIST: wall-clock minutes until DDAD's student first
reaches each test-accuracy target, for one or more ``benchmarks/fmnist_ddad.py`` runs.

    python benchmarks/time_to_accuracy.py before=runs/benchmarks/A after=runs/benchmarks/B

Each directory is an ``--out`` of fmnist_ddad.py: ``result.json`` (its wall-clock per
seed) and, per seed, ``ddad_seed<N>.log`` and ``ddad_seed<N>/metrics.jsonl`` (the student
is evaluated every epoch). A stage starts at its log's last write minus its wall-clock,
so launch, compilation and evaluation all count. Writes
``benchmarks/results/time_to_accuracy.{json,md}`` and the README table between the
``time_to_accuracy`` markers.
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import publish  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks.fmnist_ddad import time_to_accuracy  # noqa: E402  pylint: disable=wrong-import-position

TARGETS = (0.70, 0.75, 0.80, 0.85)


def summarise(label, out):
    result_path = os.path.join(out, "result.json")
    if not os.path.exists(result_path):
        sys.exit(f"error: {result_path} not found (an fmnist_ddad.py --out directory is expected)")
    result = json.load(open(result_path))
    per_target = {t: [] for t in TARGETS}
    for seed, wall in zip(result["seeds"], result["wall_s"]):
        start = os.path.getmtime(os.path.join(out, f"ddad_seed{seed}.log")) - wall
        reached = time_to_accuracy(os.path.join(out, f"ddad_seed{seed}", "metrics.jsonl"), start, TARGETS)
        for t, seconds in zip(TARGETS, reached):
            per_target[t].append(seconds)
    tail = result.get("finetune_iterations", 0)  # student-only iterations after the adversarial ones
    iterations = f"{result['iterations']} + {tail} fine-tuning" if tail else result["iterations"]
    return {"label": label, "dir": out, "iterations": iterations, "seeds": result["seeds"],
            "final_acc": result["student_acc"], "wall_s": result["wall_s"],
            "minutes_to": {f"{t:.2f}": [None if s is None else s / 60 for s in v] for t, v in per_target.items()}}


def _cell(minutes):
    reached = [m for m in minutes if m is not None]
    if not reached:
        return "not reached"
    return f"{statistics.median(reached):.1f} ({len(reached)}/{len(minutes)} seeds)"


def markdown(rows):
    lines = ["| run | iterations | " + " | ".join(f"min to {t * 100:.0f} %" for t in TARGETS)
             + " | final acc. (mean) | wall-clock (median min) |",
             "|---|---:|" + "---:|" * len(TARGETS) + "---:|---:|"]
    for r in rows:
        cells = " | ".join(_cell(r["minutes_to"][f"{t:.2f}"]) for t in TARGETS)
        lines.append(f"| {r['label']} | {r['iterations']} | {cells} | {statistics.mean(r['final_acc']) * 100:.2f} % "
                     f"| {statistics.median(r['wall_s']) / 60:.1f} |")
    lines += ["", "Minutes are medians over the seeds that reached the target; `python benchmarks/"
              "time_to_accuracy.py " + " ".join(f"{r['label']}={r['dir']}" for r in rows) + "`"]
    return "\n".join(lines)


def main():
    args = sys.argv[1:]
    if not args or any("=" not in a for a in args):
        sys.exit("error: usage: time_to_accuracy.py LABEL=RUN_DIR [LABEL=RUN_DIR ...]")
    rows = [summarise(*a.split("=", 1)) for a in args]
    print(publish("time_to_accuracy", "Fashion-MNIST DDAD: time to accuracy on this CPU", markdown(rows), rows,
                  "time_to_accuracy"))


if __name__ == "__main__":
    main()
