"""Fashion-MNIST with its training data: the KD objectives side by side, LeNet-5 (BN) ->
LeNet-5-half, a freshly trained seeded teacher per seed (the same as ``fmnist_ddad.py``'s).

    python benchmarks/fmnist_supervised.py                          # every method, seeds 0-2
    python benchmarks/fmnist_supervised.py --methods kd stkd --seeds 1   # a subset, merged
    python benchmarks/fmnist_supervised.py --out DIR                # again after an interruption:
                                                                    # finished runs in DIR are collected
    python benchmarks/fmnist_supervised.py --smoke                  # end to end in seconds, tiny sizes:
                                                                    # results into --results DIR (default
                                                                    # a temp dir), never the README

Each run is ``python -m experiments.fashion_mnist --config=configs/fmnist_lenet5_kd.py``
with one ``student_objective`` -- ``scratch`` is the student trained on the labels alone,
the reference every objective must beat -- and the same recipe for all (10 epochs, Adam
1e-3 cosine, batch 128). The student reported is the final one. Nothing was tuned here:
each objective runs with its paper's (or reference code's) hyperparameters, as
``configs/kd.py`` records them.

Writes ``benchmarks/results/fmnist_supervised.json``: a list of ``{"method", "data",
"seeds", "student_acc": [per seed], "wall_s": [per seed], "teacher_acc": [per seed], ...}``,
its Markdown and the README table between the ``fmnist_supervised`` markers.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (REPO, commit, fmnist_teacher, load_rows, machine, mean_std, parse_args, provenance,  # noqa: E402  pylint: disable=wrong-import-position
                               merge_rows, publish, run_once, run_stage)

NAME, TITLE = "fmnist_supervised", "Fashion-MNIST with its training data: KD objectives"
METHODS = ("scratch", "kd", "stkd", "ctkd", "ka", "dtd", "ka_dtd")
LABELS = {"scratch": "student alone (no teacher)", "kd": "KD (Hinton)", "stkd": "STKD", "ctkd": "CTKD",
          "ka": "KA (probability shift)", "dtd": "DTD", "ka_dtd": "KA + DTD"}
DATA = "all 60 000 training images"
SMOKE = {"methods": ["scratch", "kd"], "seeds": [0]}  # --smoke: each stage at its config's smoke size


def markdown(rows) -> str:
    teacher = [a for r in rows for a in r["teacher_acc"] if a is not None]
    seeds = sorted({s for r in rows for s in r["seeds"]})
    lines = [
        f"Protocol: Fashion-MNIST, LeNet-5 (BN) teacher trained per seed (`configs/teacher.py`, same seed; "
        f"{mean_std(teacher)} % over seeds {', '.join(map(str, seeds))}), student LeNet-5-half trained "
        "on the 60 000 training images for 10 epochs (Adam 1e-3, cosine, batch 128; `configs/fmnist_lenet5_kd.py`), "
        "final student on the 10 000 test images. Nothing tuned on this benchmark.",
        "",
        "| method | student (%) | seeds | wall-clock (min) |",
        "|---|---:|---|---:|",
    ]
    for r in rows:
        walls = [w for w in r["wall_s"] if w is not None]
        lines.append(f"| {LABELS.get(r['method'], r['method'])} | {mean_std(r['student_acc'])} | "
                     f"{', '.join(map(str, r['seeds']))} | {sum(walls) / max(len(walls), 1) / 60:.1f} |")
    lines += ["", f"Mean ± sample std over seeds. {provenance(rows)}.", "",
              "Regenerate: `python benchmarks/fmnist_supervised.py`"]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "benchmarks", "supervised-" + time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown and README table")
    args = parse_args(parser, SMOKE)
    path = os.path.join(args.results, f"{NAME}.json")
    rows = load_rows(path)
    if args.render:
        print(publish(NAME, TITLE, markdown(rows), None, NAME, directory=args.results))
        return
    os.makedirs(args.out, exist_ok=True)
    run_stage(["-m", "ddad_jax.data.prepare", "fashion_mnist"], os.path.join(args.out, "prepare.log"))
    commit_id = commit()
    host = machine()
    for seed in args.seeds:
        teacher_dir = fmnist_teacher(args.out, seed)
        for method in args.methods:
            workdir = os.path.join(args.out, f"{method}_seed{seed}")
            wall = run_once(["-m", "experiments.fashion_mnist", "--config=configs/fmnist_lenet5_kd.py",
                             f"--workdir={workdir}", f"--config.teacher_dir={teacher_dir}",
                             f"--config.seed={seed}", f"--config.student_objective={method}"], workdir)
            summary = json.load(open(os.path.join(workdir, "summary.json")))
            teacher_acc = json.load(open(os.path.join(teacher_dir, "summary.json")))["test_acc"]
            print(f"{method} seed {seed}: student {summary['student_acc']:.4f} (teacher {teacher_acc:.4f}) "
                  f"in {wall / 60:.1f} min", flush=True)
            rows = merge_rows(rows, method, DATA, seed, {"student_acc": summary["student_acc"], "wall_s": wall,
                                                         "teacher_acc": teacher_acc, "commit": commit_id},
                              {"machine": host})
            rows.sort(key=lambda r: METHODS.index(r["method"]) if r["method"] in METHODS else len(METHODS))
            publish(NAME, TITLE, markdown(rows), rows, NAME, directory=args.results)  # after every run: an interruption keeps it
    print(markdown(rows))


if __name__ == "__main__":
    main()
