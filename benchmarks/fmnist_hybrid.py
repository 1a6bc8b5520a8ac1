"""Fashion-MNIST with a few real images or none: HiDFD against KD on the same few images,
and DDAD with the KD objectives as its student objective. LeNet-5 (BN) -> LeNet-5-half, a
freshly trained seeded teacher per seed (the same as ``fmnist_ddad.py``'s).

    python benchmarks/fmnist_hybrid.py                                   # every row, seeds 0-2
    python benchmarks/fmnist_hybrid.py --rows hidfd-600 kd-600 --seeds 0  # a subset, merged
    python benchmarks/fmnist_hybrid.py --out DIR                         # collect an interrupted run
    python benchmarks/fmnist_hybrid.py --smoke                           # end to end in seconds, tiny sizes:
                                                                         # results into --results DIR (default
                                                                         # a temp dir), never the README

Rows (``--rows``):

* ``kd-600``, ``kd-120``: KD (``configs/fmnist_lenet5_kd.py``) on 600 (1 %) or 120 (0.2 %)
  class-balanced real images alone, 2 000 steps: the baseline HiDFD must beat;
* ``hidfd-600``, ``hidfd-120``: HiDFD (``configs/fmnist_lenet5_hidfd.py``) from the same images;
* ``ddad``: DDAD's own protocol (``configs/fmnist_lenet5.py``), copied per seed from
  ``benchmarks/results/fmnist_ddad.json``, which the same command wrote;
* ``ddad-kd``, ``ddad-stkd``, ``ddad-dtd``: DDAD with that objective for its student (the
  adversarial and the fine-tuning phases), at temperature 4, with both student learning
  rates divided by ``T^2 = 16``: the objectives' ``T^2`` factor multiplies the step, and at
  DDAD's own rates the student's loss on the synthetic images rose from the first steps and the
  student stayed at chance (10.00 %, seed 0). At 1/16 of them the loss falls. Decided from that
  training loss (a divergence), not from test accuracy.

Nothing was tuned on this benchmark. Writes ``benchmarks/results/fmnist_hybrid.json`` (a
list of ``{"method", "data", "seeds", "student_acc": [..], "wall_s": [..], ...}``), its
Markdown and the README table between the ``fmnist_hybrid`` markers.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (REPO, RESULTS, commit, fmnist_teacher, load_rows, machine, mean_std, parse_args,  # noqa: E402  pylint: disable=wrong-import-position
                               provenance, merge_rows, publish, run_once, run_stage)

NAME, TITLE = "fmnist_hybrid", "Fashion-MNIST with a few real images or none"
FEW_STEPS = ["--config.steps_per_epoch=200", "--config.num_epochs=10"]  # 2 000 steps, as HiDFD's student stage


KD_TEMPERATURE = 4.0


def _ddad(objective):
    from configs import fmnist_lenet5  # pylint: disable=import-outside-toplevel
    base, scale = fmnist_lenet5.get_config(), KD_TEMPERATURE ** 2
    return ["--config=configs/fmnist_lenet5.py", f"--config.student_objective={objective}",
            f"--config.finetune_objective={objective}", f"--config.temperature={KD_TEMPERATURE:g}",
            f"--config.student_lr={base.student_lr / scale:g}", f"--config.finetune_lr={base.finetune_lr / scale:g}"]


# row: (method, data, config arguments or None = copied from fmnist_ddad.json)
ROWS = {
    "kd-600": ("KD", "600 real images", ["--config=configs/fmnist_lenet5_kd.py", "--config.train_examples=600",
                                        *FEW_STEPS]),
    "kd-120": ("KD", "120 real images", ["--config=configs/fmnist_lenet5_kd.py", "--config.train_examples=120",
                                        *FEW_STEPS]),
    "hidfd-600": ("HiDFD", "600 real images", ["--config=configs/fmnist_lenet5_hidfd.py", "--config.train_examples=600"]),
    "hidfd-120": ("HiDFD", "120 real images", ["--config=configs/fmnist_lenet5_hidfd.py", "--config.train_examples=120"]),
    "ddad": ("DDAD", "no data", None),
    "ddad-kd": ("DDAD + KD", "no data", _ddad("kd")),
    "ddad-stkd": ("DDAD + STKD", "no data", _ddad("stkd")),
    "ddad-dtd": ("DDAD + DTD", "no data", _ddad("dtd")),
}
# --smoke: a row that runs (KD on 120 images) and the DDAD row copied from fmnist_ddad.json
# (absent from a fresh --results: reported missing), one seed, each stage at its config's smoke size
SMOKE = {"rows": ["kd-120", "ddad"], "seeds": [0]}


def markdown(rows) -> str:
    teacher = [a for r in rows for a in r["teacher_acc"] if a is not None]
    lines = [
        f"Protocol: Fashion-MNIST, LeNet-5 (BN) teacher trained per seed ({mean_std(teacher)} %), student "
        "LeNet-5-half, final student on the 10 000 test images. Real images are drawn class-balanced with the "
        "seed. Nothing tuned on this benchmark.",
        "",
        "| method | data | student (%) | seeds | wall-clock (min) |",
        "|---|---|---:|---|---:|",
    ]
    for r in rows:
        walls = [w for w in r["wall_s"] if w is not None]
        lines.append(f"| {r['method']} | {r['data']} | {mean_std(r['student_acc'])} | {', '.join(map(str, r['seeds']))} "
                     f"| {sum(walls) / max(len(walls), 1) / 60:.1f} |")
    lines += ["", f"Mean ± sample std over seeds. {provenance(rows)}. The DDAD row is copied from `fmnist_ddad.json` "
              "(the same command and seeds). DDAD + an objective: DDAD's protocol with that objective for the "
              f"student at T = {KD_TEMPERATURE:g} and both student rates divided by T² (at DDAD's own rates the "
              "KD student diverged to chance; the script's docstring says more).",
              "", "Regenerate: `python benchmarks/fmnist_hybrid.py`"]
    return "\n".join(lines)


def _ddad_row(seed, results=RESULTS):
    """Seed ``seed`` of ``fmnist_ddad.json`` (DDAD's own benchmark) in ``results``, or None if
    it has not run."""
    path = os.path.join(results, "fmnist_ddad.json")
    if not os.path.exists(path):
        return None
    result = json.load(open(path))
    if seed not in result["seeds"]:
        return None
    i = result["seeds"].index(seed)
    return {"student_acc": result["student_acc"][i], "wall_s": result["wall_s"][i],
            "teacher_acc": result["teacher_acc"][i], "commit": result["commit"][i]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "benchmarks", "hybrid-" + time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown and README table")
    args = parse_args(parser, SMOKE)
    path = os.path.join(args.results, f"{NAME}.json")
    rows = load_rows(path)
    order = [ROWS[k][:2] for k in ROWS]
    if args.render:
        print(publish(NAME, TITLE, markdown(rows), None, NAME, directory=args.results))
        return
    os.makedirs(args.out, exist_ok=True)
    run_stage(["-m", "ddad_jax.data.prepare", "fashion_mnist"], os.path.join(args.out, "prepare.log"))
    commit_id, host = commit(), machine()
    for seed in args.seeds:
        for key in args.rows:
            method, data, config_args = ROWS[key]
            if config_args is None:
                values = _ddad_row(seed, args.results)
                if values is None:
                    print(f"{key} seed {seed}: not in fmnist_ddad.json; run benchmarks/fmnist_ddad.py --seeds {seed}")
                    continue
            else:
                teacher_dir = fmnist_teacher(args.out, seed)
                workdir = os.path.join(args.out, f"{key}_seed{seed}")
                wall = run_once(["-m", "experiments.fashion_mnist", *config_args, f"--workdir={workdir}",
                                 f"--config.teacher_dir={teacher_dir}", f"--config.seed={seed}"], workdir)
                summary = json.load(open(os.path.join(workdir, "summary.json")))
                teacher_acc = json.load(open(os.path.join(teacher_dir, "summary.json")))["test_acc"]
                values = {"student_acc": summary["student_acc"], "wall_s": wall, "teacher_acc": teacher_acc,
                          "commit": commit_id}
            print(f"{key} seed {seed}: student {values['student_acc']:.4f} in {values['wall_s'] / 60:.1f} min",
                  flush=True)
            rows = merge_rows(rows, method, data, seed, values, {"machine": host})
            rows.sort(key=lambda r: order.index((r["method"], r["data"])) if (r["method"], r["data"]) in order
                      else len(order))
            publish(NAME, TITLE, markdown(rows), rows, NAME, directory=args.results)  # after every run: an interruption keeps it
    print(markdown(rows))


if __name__ == "__main__":
    main()
