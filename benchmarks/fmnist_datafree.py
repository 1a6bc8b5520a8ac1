"""The data-free family on Fashion-MNIST, compared fairly: LeNet-5 (BN) -> LeNet-5-half, the
same seeded teachers as ``fmnist_ddad.py``, the same wall-clock budget per run on this CPU.

    python benchmarks/fmnist_datafree.py                                   # every row, seeds 0-2
    python benchmarks/fmnist_datafree.py --rows cmi fast --seeds 0         # a subset, merged
    python benchmarks/fmnist_datafree.py --out DIR                         # collect an interrupted run
    python benchmarks/fmnist_datafree.py --render                          # only the table and plot
    python benchmarks/fmnist_datafree.py --smoke                           # end to end in a minute, tiny sizes:
                                                                           # results into --results DIR (default
                                                                           # a temp dir), never the README

Every run is one command, ``python -m experiments.fashion_mnist --config=configs/<method>.py:
fashion_mnist`` with ``--config.time_budget_s`` (default 720 s: synthesis and student
together); a run still going at the budget stops there, and its student as it is then is the
final one. Rows (``--rows``):

* the methods: ``dafl``, ``dfad``, ``deepinversion``, ``dfq``, ``cmi``, ``fast`` (each with
  its paper's / reference code's hyperparameters, recorded in its config);
* DDAD's ablations: ``ddad`` (both discriminators, ``configs/fmnist_lenet5.py``), ``ddad-bn``
  (the BN term only), ``ddad-adversarial`` (the adversarial term only);
* ``ddad_plus`` (``configs/ddad_plus.py``) and its ablation, one part switched back to DDAD's
  each: ``ddad_plus-no_ce``, ``-no_agree``, ``-no_kl``, ``-no_pool``; and ``-bn_momentum``,
  Fast's BN momentum, which DDAD+ leaves off. The ablation rows run DDAD+'s whole schedule
  without the time cap and are read against DDAD+ on the same seed, pairing only runs that
  finished that schedule (DDAD+'s did, inside the budget, on the machine that ran them), so a
  difference is the part's and not the machine's speed: this CPU's speed varied by ~40 %
  between sessions, and capped variants run on a slower day lost their fine-tuning epochs.

The teacher's accuracy and the student trained on the real training data
(``fmnist_supervised.json``'s ``scratch`` row, when it has run) are the references. Nothing
was tuned on this benchmark. Writes ``benchmarks/results/fmnist_datafree.json``: a list of
``{"method", "student_acc": [per seed], "wall_s": [..], "synthetic_images": int,
"time_to_80_s": [per seed or null], "curve": [per seed: [[seconds, accuracy], ..]], ...}``,
its Markdown, the README table between the ``fmnist_datafree`` markers and
``fmnist_datafree.png`` (accuracy against minutes).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (PER_SEED_ROW, REPO, RESULTS, commit, fmnist_teacher, load_rows, machine,  # noqa: E402  pylint: disable=wrong-import-position
                               mean_std, merge_rows, parse_args, provenance, publish, run_once, run_stage)

NAME, TITLE = "fmnist_datafree", "The data-free family on Fashion-MNIST, equal wall-clock budgets"
BUDGET_S = 720.0
TARGET = 0.80  # time_to_80_s: the first evaluation at or above this accuracy
DATA = "no data"
KEYS = (*PER_SEED_ROW, "time_to_80_s", "synthetic_images_per_seed", "curve", "per_class_acc",
        "teacher_per_class_acc", "stopped_at_step")


def _classes():
    """Fashion-MNIST's class names, from the library's one table of them."""
    from ddad_jax.data import classes  # pylint: disable=import-outside-toplevel
    return list(classes.FASHION_MNIST)


def _method(name, *extra):
    return [f"--config=configs/{name}.py:fashion_mnist", *extra]


_DDAD = ["--config=configs/fmnist_lenet5.py"]
# row: (label, config arguments, in the plot)
ROWS = {
    "dafl": ("DAFL", _method("dafl"), True),
    "dfad": ("DFAD / ZSKT", _method("dfad"), True),
    "deepinversion": ("DeepInversion", _method("deepinversion"), True),
    "dfq": ("DFQ", _method("dfq"), True),
    "cmi": ("CMI", _method("cmi"), True),
    "fast": ("Fast", _method("fast"), True),
    "ddad": ("DDAD", _DDAD, True),
    "ddad-bn": ("DDAD, BN term only", [*_DDAD, "--config.generator_terms.adversarial=0"], False),
    "ddad-adversarial": ("DDAD, adversarial term only", [*_DDAD, "--config.generator_terms.bn=0"], False),
    "ddad_plus": ("DDAD+", _method("ddad_plus"), True),
    "ddad_plus-bn_momentum": ("DDAD+ with BN momentum 0.9", _method("ddad_plus", "--config.bn_momentum=0.9"), False),
    "ddad_plus-no_ce": ("DDAD+ without class targets", _method("ddad_plus", "--config.generator_terms.ce=0"), False),
    "ddad_plus-no_agree": ("DDAD+ with DDAD's L1 adversary", _method(
        "ddad_plus", "--config.generator_terms.adversarial_agree=0", "--config.generator_terms.adversarial=1"), False),
    "ddad_plus-no_kl": ("DDAD+ with DDAD's L1 student", _method(
        "ddad_plus", "--config.student_objective=l1"), False),
    "ddad_plus-no_pool": ("DDAD+ without the pool", _method("ddad_plus", "--config.pool_size=0"), False),
}
LABELS = [label for label, _, _ in ROWS.values()]
# DDAD+'s ablation is read beside DDAD+ on the results page; the README keeps the methods and
# DDAD's two one-term rows (the BN term alone is a contender, not only an ablation)
ABLATION = {label for key, (label, _, _) in ROWS.items() if key.startswith("ddad_plus-")}
# --smoke: DDAD and one of DDAD+'s ablation rows (the methods table, the plot, the ablation
# table and the per-class table), one seed, each stage at its config's smoke size
SMOKE = {"rows": ["ddad", "ddad_plus-no_pool"], "seeds": [0]}


def run_budget(key: str, budget_s: float) -> float:
    """The ``time_budget_s`` a row runs under: the benchmark's for the methods, none (0) for
    DDAD+'s ablation, compared at an equal schedule with DDAD+ (module docstring)."""
    return 0.0 if ROWS[key][0] in ABLATION else budget_s


def read_curve(workdir: str):
    """``[[elapsed seconds, test accuracy], ..]`` of a run's evaluations (``metrics.jsonl``)."""
    curve = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "test/student_accuracy" in record and "elapsed_s" in record:
                curve.append([round(record["elapsed_s"], 1), record["test/student_accuracy"]])
    return curve


def time_to(curve, target: float = TARGET):
    """Seconds to the first evaluation at or above ``target``, or None."""
    return next((t for t, acc in curve if acc >= target), None)


def per_class_accuracy(workdir: str, teacher_dir: str):
    """(student, teacher) test accuracy of each Fashion-MNIST class: the run's final student
    (``workdir/student``) and its teacher, on the 10 000 test images -- where a data-free
    student loses to its teacher."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from ddad_jax import data, export, teacher  # pylint: disable=import-outside-toplevel
    spec = data.get_spec("fashion_mnist")
    images, labels = data.load_split(spec, "test")
    x = data.normalize(jnp.asarray(images), spec)
    model, variables, _ = export.load_student(workdir)
    t_model, t_variables, _ = teacher.load_teacher(teacher_dir, "lenet5_bn", "fashion_mnist")
    out = []
    for logits in (model.apply(variables, x), t_model.apply(t_variables, x)):
        pred = np.asarray(logits).argmax(-1)
        out.append([round(float((pred[labels == c] == c).mean()), 4) for c in range(len(_classes()))])
    return tuple(out)


def per_class_table(rows) -> str:
    """Per-class accuracy (%), each row's mean over the seeds that have it, the teachers first."""
    def mean(vectors):
        vectors = [v for v in vectors if v]
        return [sum(col) / len(col) * 100 for col in zip(*vectors)] if vectors else None

    teachers = {s: v for r in rows for s, v in zip(r["seeds"], r.get("teacher_per_class_acc", [])) if v}
    classes = _classes()
    lines = ["| | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    seeds = lambda n: f"{n} seed{'s' if n > 1 else ''}"
    table = [(f"*teacher* ({seeds(len(teachers))})", mean(teachers.values()))]
    table += [(f"{r['method']} ({seeds(sum(1 for v in r.get('per_class_acc', []) if v))})",
               mean(r.get("per_class_acc", []))) for r in rows]
    lines += [f"| {name} | " + " | ".join(f"{a:.1f}" for a in acc) + " |" for name, acc in table if acc]
    return "\n".join(lines) if len(lines) > 3 else ""


def _reference_student(results=RESULTS):
    rows = load_rows(os.path.join(results, "fmnist_supervised.json"))
    return next((r for r in rows if r["method"] == "scratch"), None)


def _teachers(rows):
    """{seed: teacher accuracy}: each seeded teacher once, however many rows used it."""
    return {s: a for r in rows for s, a in zip(r["seeds"], r["teacher_acc"]) if a is not None}


def _epochs_run(row) -> str:
    """The evaluations (one per epoch or round) each seed's run reached, from its curve."""
    return ", ".join(str(len(c)) if c else "?" for c in row.get("curve") or [])


def _finished(row):
    """The seeds of ``row`` whose run finished its schedule (the time budget did not stop it)."""
    stops = row.get("stopped_at_step") or [None] * len(row["seeds"])
    return {s for s, stop in zip(row["seeds"], stops) if stop is None}


def ablation_table(rows) -> str:
    """DDAD+'s ablation: each row with one part switched back, and its paired difference from
    DDAD+ on the seeds both ran (the same teachers), so what each part buys is read seed by
    seed rather than across different teachers (``–`` where DDAD+ has not run on any of its
    seeds). Only runs that finished their schedule are paired: one the time budget stopped
    (``stopped_at_step``) is short of the other's epochs. Empty until an ablation row exists."""
    plus = next((r for r in rows if r["method"] == ROWS["ddad_plus"][0]), None)
    ablated = [r for r in rows if r["method"] in ABLATION]
    if not ablated:
        return ""
    by_seed = {s: acc for s, acc in zip(plus["seeds"], plus["student_acc"]) if s in _finished(plus)} if plus else {}
    lines = ["| DDAD+ with one part switched back | student (%) | seeds | minus DDAD+ on the same seeds (points) |",
             "|---|---:|---|---:|"]
    for r in ablated:
        finished = _finished(r)
        diffs = [acc - by_seed[s] for s, acc in zip(r["seeds"], r["student_acc"])
                 if s in by_seed and s in finished and acc is not None]
        paired = f"{mean_std(diffs)}" if diffs else "– (the budget stopped its run)" if by_seed and not finished else "–"
        lines.append(f"| {r['method']} | {mean_std(r['student_acc'])} | {', '.join(map(str, r['seeds']))} | {paired} |")
    return "\n".join(lines)


def markdown(rows, budget_s: float = BUDGET_S, results: str = RESULTS) -> str:
    """The results page; the reference student comes from ``results``' ``fmnist_supervised.json``."""
    teacher = list(_teachers(rows).values())
    scratch = _reference_student(results)
    lines = [
        f"Protocol: Fashion-MNIST, LeNet-5 (BN) teacher trained per seed ({mean_std(teacher)} %), student "
        f"LeNet-5-half, no training image seen; every run gets the same {budget_s / 60:.0f} minutes of this CPU "
        "(synthesis and student together) and the final student is reported, on the 10 000 test images. "
        "Nothing tuned on this benchmark.",
        "",
        "| method | student (%) | seeds | reached 80 % (min) | synthetic images | wall-clock (min) | epochs run |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    if scratch:
        lines.append(f"| *reference: the student trained on the 60 000 real images* | {mean_std(scratch['student_acc'])} "
                     f"| {', '.join(map(str, scratch['seeds']))} | | | | |")
    for r in (r for r in rows if r["method"] not in ABLATION):
        reached = [t for t in r.get("time_to_80_s", []) if t is not None]
        when = f"{statistics.median(reached) / 60:.1f} ({len(reached)}/{len(r['seeds'])} seeds)" if reached else \
            f"never (0/{len(r['seeds'])})"
        walls = [w for w in r["wall_s"] if w is not None]
        lines.append(f"| {r['method']} | {mean_std(r['student_acc'])} | {', '.join(map(str, r['seeds']))} | {when} "
                     f"| {r.get('synthetic_images', 0):,} | {statistics.median(walls) / 60:.1f} | {_epochs_run(r)} |")
    lines += ["", "Mean ± sample std over seeds; time to 80 %: the median over the seeds that reached it; "
              "synthetic images: the generator's (or pixel optimiser's) output in the run, median over seeds; "
              "wall-clock: the whole command, median; epochs run: the evaluations each seed's run reached (an epoch, "
              "or a synthesis round for DeepInversion, CMI and Fast), fewer than the row's schedule where the budget "
              "stopped it -- this CPU's speed varied by ~40 % between the sessions that ran the seeds, so a "
              f"budget-bound row's seeds did not all get the same work. {provenance(rows)}.", "",
              f"![accuracy against minutes]({NAME}.png)", ""]
    ablation = ablation_table(rows)
    if ablation:
        lines += ["What each part of DDAD+ buys: DDAD+ against itself with one part switched back to DDAD's "
                  "choice, same teachers, DDAD+'s whole schedule without the time cap; only runs that finished the "
                  "schedule are paired, so the difference is the part's, not the machine's speed; a negative "
                  "difference: the part helps.", "", ablation, ""]
    classes = per_class_table(rows)
    if classes:
        lines += ["Where the students lose: test accuracy of each class (%), the mean over the seeds that "
                  "recorded it (a run's final student; `--per_class` fills it in for finished runs).", "",
                  classes, ""]
    lines += ["Regenerate: `python benchmarks/fmnist_datafree.py`"]
    return "\n".join(lines)


def readme_summary(rows, results: str = RESULTS) -> str:
    """The README's short form: the table without DDAD+'s ablation rows; the protocol, the
    ablation and the plot stay in the results page."""
    shown = [r for r in rows if r["method"] not in ABLATION]
    table = markdown(shown, results=results).split("\n\n")[1]
    more = " and DDAD+'s ablation" if len(shown) < len(rows) else ""
    return (f"{table}\n\nTeachers {mean_std(list(_teachers(rows).values()))} %; 12 minutes of this CPU per run; "
            f"protocol, notes{more} and the accuracy-versus-minutes plot: [{NAME}.md](benchmarks/results/{NAME}.md).")


def plot(rows, path: str, budget_s: float = BUDGET_S) -> bool:
    """Accuracy against minutes, one line per method (the mean over its seeds of each seed's
    evaluations, held between them); the teacher dashed. False when matplotlib is missing."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("warning: no matplotlib (pip install matplotlib): the plot was not redrawn", flush=True)
        return False
    shown = {label for label, _, in_plot in ROWS.values() if in_plot}
    grid = [budget_s * i / 200 for i in range(201)]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for r in rows:
        curves = [c for c in r.get("curve", []) if c]
        if r["method"] not in shown or not curves:
            continue
        held = lambda c, t: next((acc for s, acc in reversed(c) if s <= t), None)
        mean = []
        for t in grid:
            values = [held(c, t) for c in curves]
            mean.append(sum(values) / len(values) * 100 if all(v is not None for v in values) else float("nan"))
        ax.plot([t / 60 for t in grid], mean, label=f"{r['method']} ({len(curves)} seed{'s' if len(curves) > 1 else ''})",
                linewidth=2.2 if r["method"].startswith("DDAD") else 1.4)
    teacher = list(_teachers(rows).values())
    if teacher:
        ax.axhline(sum(teacher) / len(teacher) * 100, color="black", linestyle="--", linewidth=1, label="teacher")
    ax.axhline(TARGET * 100, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("minutes (2-core CPU)")
    ax.set_ylabel("student test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(0, budget_s / 60)
    ax.set_title("Fashion-MNIST, LeNet-5 (BN) -> LeNet-5-half, no data")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _publish(rows, budget_s, results=RESULTS):
    publish(NAME, TITLE, markdown(rows, budget_s, results), rows, NAME, directory=results,
            readme_table=readme_summary(rows, results))
    plot(rows, os.path.join(results, f"{NAME}.png"), budget_s)


def collect_per_class(rows, out: str, keys, seeds):
    """``rows`` with the per-class accuracies of the finished runs under ``out`` added, and the
    step the time budget stopped each at (``stopped_at_step``, None if it finished): only a
    run whose final student is the one the row records (same accuracy), so a later run in
    the same place is never attributed to an earlier result."""
    rows = [dict(r) for r in rows]
    for key in keys:
        label = ROWS[key][0]
        row = next((r for r in rows if r["method"] == label), None)
        for seed in seeds:
            workdir = os.path.join(out, f"{key}_seed{seed}")
            if row is None or seed not in row["seeds"] or not os.path.exists(os.path.join(workdir, "summary.json")):
                continue
            i = row["seeds"].index(seed)
            teacher_dir = os.path.join(out, f"teacher_seed{seed}")
            same_teacher = json.load(open(os.path.join(teacher_dir, "summary.json")))["test_acc"] == row["teacher_acc"][i]
            summary = json.load(open(os.path.join(workdir, "summary.json")))
            if summary["student_acc"] != row["student_acc"][i] or not same_teacher:
                print(f"{key} seed {seed}: {workdir} holds another run than the recorded one; skipped", flush=True)
                continue
            student, teacher = per_class_accuracy(workdir, teacher_dir)
            for k, v in (("per_class_acc", student), ("teacher_per_class_acc", teacher),
                         ("stopped_at_step", summary.get("stopped_at_step"))):
                row[k] = (list(row.get(k) or []) + [None] * len(row["seeds"]))[:len(row["seeds"])]
                row[k][i] = v
            print(f"{key} seed {seed}: per-class accuracy added", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget_s", type=float, default=BUDGET_S, help="wall-clock seconds per run")
    parser.add_argument("--out", default=os.path.join(REPO, "runs", "benchmarks", "datafree-" + time.strftime("%Y%m%d-%H%M%S")))
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown, README table and plot")
    parser.add_argument("--per_class", action="store_true",
                        help="only add the per-class accuracy (and where the budget stopped them) of the finished "
                             "runs in --out that the JSON records")
    args = parse_args(parser, SMOKE)
    if args.budget_s <= 0:
        sys.exit("error: --budget_s must be > 0")
    path = os.path.join(args.results, f"{NAME}.json")
    rows = load_rows(path)
    if args.render:
        _publish(rows, args.budget_s, args.results)
        print(markdown(rows, args.budget_s, args.results))
        return
    if args.per_class:
        rows = collect_per_class(rows, args.out, args.rows, args.seeds)
        _publish(rows, args.budget_s, args.results)
        return
    os.makedirs(args.out, exist_ok=True)
    run_stage(["-m", "ddad_jax.data.prepare", "fashion_mnist"], os.path.join(args.out, "prepare.log"))
    commit_id, host = commit(), machine()
    for seed in args.seeds:
        teacher_dir = fmnist_teacher(args.out, seed)
        teacher_acc = json.load(open(os.path.join(teacher_dir, "summary.json")))["test_acc"]
        for key in args.rows:
            label, config_args, _ = ROWS[key]
            workdir = os.path.join(args.out, f"{key}_seed{seed}")
            budget = run_budget(key, args.budget_s)
            wall = run_once(["-m", "experiments.fashion_mnist", *config_args, f"--workdir={workdir}",
                             f"--config.teacher_dir={teacher_dir}", f"--config.seed={seed}",
                             f"--config.time_budget_s={budget}"], workdir)
            summary = json.load(open(os.path.join(workdir, "summary.json")))
            curve = read_curve(workdir)
            student_classes, teacher_classes = per_class_accuracy(workdir, teacher_dir)
            values = {"student_acc": summary["student_acc"], "wall_s": wall, "teacher_acc": teacher_acc,
                      "commit": commit_id, "time_to_80_s": time_to(curve), "curve": curve,
                      "synthetic_images_per_seed": summary.get("synthetic_images"),
                      "per_class_acc": student_classes, "teacher_per_class_acc": teacher_classes,
                      "stopped_at_step": summary.get("stopped_at_step")}  # None: the schedule finished
            print(f"{key} seed {seed}: student {summary['student_acc']:.4f} (teacher {teacher_acc:.4f}) in "
                  f"{wall / 60:.1f} min", flush=True)
            rows = merge_rows(rows, label, DATA, seed, values, {"machine": host, "budget_s": budget}, KEYS)
            for r in rows:
                counts = [n for n in r.get("synthetic_images_per_seed", []) if n is not None]
                r["synthetic_images"] = int(statistics.median(counts)) if counts else 0
            rows.sort(key=lambda r: LABELS.index(r["method"]) if r["method"] in LABELS else len(LABELS))
            _publish(rows, args.budget_s, args.results)  # after every run: an interruption keeps it
    print(markdown(rows, args.budget_s, args.results))


if __name__ == "__main__":
    main()
