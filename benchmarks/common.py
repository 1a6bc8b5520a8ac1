"""What every benchmark script shares: where results go, how README tables are filled, and
the smoke mode (``--smoke``): the script end to end at tiny sizes, into a directory of the
caller's (``--results``), never README.md or ``benchmarks/results/``."""

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")


def cpu_description() -> str:
    """The host CPU's model name and the widest x86 vector ISA it offers (``AMD EPYC, AVX-512``):
    XLA compiles for the host's instruction set, and a float result's last bits follow it
    (docs/reproducibility.md), so every figure names the CPU that computed it."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    isa = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))
                if flag in flags), None)
    return f"{model}, {isa}" if isa else model


def machine(devices: Optional[int] = None) -> str:
    """What computed a benchmark's figures: architecture, CPU model and ISA, cores, the number of
    JAX devices (when given) and the jax/jaxlib/flax versions -- the figures reproduce to the
    digit on the same CPU class with the same versions (docs/reproducibility.md)."""
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    versions = []
    for package in ("jax", "jaxlib", "flax"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    parts = [f"{platform.machine()} ({cpu_description()})", f"{os.cpu_count()} CPU cores"]
    if devices is not None:
        parts.append(f"{devices} JAX device(s)")
    return ", ".join(parts + versions)


def update_readme(key: str, table: str) -> None:
    """Replaces the text between ``<!-- key:begin -->`` and ``<!-- key:end -->`` in README.md."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    path = os.path.join(REPO, "README.md")
    text = open(path).read()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        with open(path, "w") as f:
            f.write(head + begin + "\n" + table + "\n" + end + rest.split(end, 1)[1])


def publishes_readme(directory: str) -> bool:
    """Whether results written to ``directory`` also fill README.md: only the published ones
    (``benchmarks/results``), never a smoke run's or another directory's."""
    return os.path.abspath(directory) == os.path.abspath(RESULTS)


def publish(name: str, title: str, table: str, data: Any = None, readme_key: Optional[str] = None,
            directory: str = RESULTS, readme_table: Optional[str] = None) -> str:
    """Writes ``<directory>/<name>.md`` (and ``<name>.json`` from ``data``), and -- only when
    ``directory`` is ``benchmarks/results`` -- the README table between the ``readme_key``
    markers (``readme_table``, a summary, if given, else ``table``); returns ``table``."""
    os.makedirs(directory, exist_ok=True)
    if data is not None:
        with open(os.path.join(directory, f"{name}.json"), "w") as f:
            json.dump(data, f, indent=2)
    with open(os.path.join(directory, f"{name}.md"), "w") as f:
        f.write(f"# {title}\n\n{table}\n")
    if readme_key and publishes_readme(directory):
        update_readme(readme_key, readme_table or table)
    return table


def run_stage(args: Sequence[str], log_path: str) -> float:
    """Runs ``python ARGS`` from the repository root as a user would, its output into
    ``log_path``; returns its wall seconds, or ends the benchmark with an ``error:`` line.
    Under ``--smoke`` the stage runs at its smoke size (``smoke_stage``)."""
    args = stage_args(args)
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1"}, check=False)
    if proc.returncode:
        sys.exit(f"error: stage failed ({' '.join(args)}); see {log_path}")
    return time.time() - t0


def run_once(args: Sequence[str], workdir: str) -> float:
    """``run_stage(args)`` into ``workdir`` (log ``workdir.log``) unless an earlier invocation
    with the same ``--out`` finished it with the same arguments and the same code: then its
    recorded wall seconds. ``workdir.run.json`` records all three; a finished run with other
    arguments, or from other code (a config's defaults changed under the same arguments), ends
    the benchmark with an ``error:`` line instead of reusing a stale result."""
    args = stage_args(args)  # a smoke run records what it ran: never collected as a full-size one
    record = workdir + ".run.json"
    if os.path.exists(record):
        done = json.load(open(record))
        if done["args"] != list(args):
            sys.exit(f"error: {workdir} was run with other arguments ({' '.join(done['args'])}); "
                     "pass another --out")
        if "code" in done and done["code"] != code_version():
            sys.exit(f"error: {workdir} was run with other code (ddad_jax/, configs/ or experiments/ "
                     "changed since); pass another --out, or remove it and its .log/.run.json to rerun it")
        print(f"{os.path.basename(workdir)}: collected from {workdir}", flush=True)
        return float(done["wall_s"])
    if os.path.exists(workdir + ".wall_s"):  # recorded before the arguments were
        print(f"{os.path.basename(workdir)}: collected from {workdir} (arguments not recorded)", flush=True)
        return float(open(workdir + ".wall_s").read())
    code = code_version()
    wall = run_stage(args, workdir + ".log")
    with open(record, "w") as f:
        json.dump({"args": list(args), "wall_s": round(wall, 1), "code": code}, f)
    return wall


# --- smoke mode -----------------------------------------------------------------------------

_SMOKE = {"on": False}  # set by parse_args: every stage a script launches then runs at smoke size
_MISSING = object()


def parse_args(parser: argparse.ArgumentParser, smoke_defaults: Optional[Dict[str, Any]] = None,
               argv: Optional[Sequence[str]] = None, results_aliases: Sequence[str] = ()) -> argparse.Namespace:
    """``parser``'s arguments plus ``--smoke`` and ``--results`` (``results_aliases``: older
    names of it). ``--smoke``: the script's ``smoke_defaults`` (its tiny sizes: seeds, rows,
    repeats) replace the defaults the caller did not override, each stage it launches runs its
    config's smoke form (``smoke_stage``), ``--results`` defaults to a new temporary
    directory and ``--out`` (the runs, if the script has one) to ``RESULTS_DIR/runs``.
    ``args.results`` is where the script reads and writes its results."""
    parser.add_argument("--smoke", action="store_true",
                        help="run end to end at tiny sizes (seconds to a minute on 2 CPU cores), results into "
                             "--results (default: a new temporary directory), never README.md or benchmarks/results/")
    parser.add_argument("--results", *results_aliases, dest="results", default=None,
                        help="where the JSON and Markdown are read and written (default benchmarks/results, "
                             "whose tables also fill README.md; with --smoke a new temporary directory)")
    args = parser.parse_args(argv)
    if args.smoke:
        parser.set_defaults(**(smoke_defaults or {}), **({"out": None} if hasattr(args, "out") else {}))
        args = parser.parse_args(argv)
        for flag in ("render", "per_class"):
            if getattr(args, flag, None):
                sys.exit(f"error: --smoke runs the benchmark; it does not combine with --{flag}")
    args.results = results_dir(args.results, args.smoke)
    if args.smoke:
        if getattr(args, "out", "") is None:
            args.out = os.path.join(args.results, "runs")
        print(f"smoke: results in {args.results}", flush=True)
    _SMOKE["on"] = args.smoke
    return args


def results_dir(results: Optional[str], smoke: bool) -> str:
    """Where the results go: ``results`` if given, else ``benchmarks/results``, or for a
    smoke run a new temporary directory; a smoke run into ``benchmarks/results`` is refused."""
    if smoke and results is not None and publishes_readme(results):
        sys.exit("error: --smoke never writes benchmarks/results/; pass another --results")
    if results is not None:
        return results
    return tempfile.mkdtemp(prefix="ddad_bench_smoke_") if smoke else RESULTS


def stage_args(args: Sequence[str]) -> List[str]:
    """A stage's arguments as this invocation runs them: ``smoke_stage(args)`` under ``--smoke``."""
    return smoke_stage(args) if _SMOKE["on"] else list(args)


def smoke_stage(args: Sequence[str]) -> List[str]:
    """A stage's arguments at smoke size: its ``--config=FILE[:ARG]`` becomes that config's
    smoke form (``smoke_config``), and an override ``--config.FIELD=V`` of a number the smoke
    form shrinks, by a larger ``V`` (a row's ``--config.num_epochs=10``), takes the smoke
    form's value; a smaller one (an ablation's ``--config.pool_size=0``) stays. A stage
    without ``--config`` (data preparation) runs as it is. Applying it twice changes nothing."""
    config = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    if config is None:
        return list(args)
    from configs import common as config_common  # pylint: disable=import-outside-toplevel
    small = smoke_config(config)
    full_config, small_config = load_config(config), load_config(small)
    out = []
    for arg in args:
        if arg.startswith("--config="):
            arg = f"--config={small}"
        elif arg.startswith("--config.") and "=" in arg:
            field, value = arg[len("--config."):].split("=", 1)
            shrunk = config_field(small_config, field)
            smoke_sets = field in config_common.SMOKE or shrunk != config_field(full_config, field)
            if smoke_sets and exceeds(value, shrunk):
                arg = f"--config.{field}={shrunk!r}"
        out.append(arg)
    return out


def exceeds(flag: str, limit) -> bool:
    """Whether the flag value ``flag`` is a number above the number ``limit``."""
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        return False
    try:
        return float(flag) > limit
    except ValueError:
        return False


def smoke_config(value: str) -> str:
    """The smoke form of a ``--config`` value ``FILE[:ARG]``: ``FILE:ARG,smoke`` (every config
    takes ``smoke``, ``configs/common.py``); a file that refuses it: an ``error:`` line, never
    a full-size run."""
    path, _, arg = value.partition(":")
    if "smoke" in arg.split(","):
        return value
    candidate = f"{path}:{arg},smoke" if arg else f"{path}:smoke"
    try:
        load_config(candidate)
    except ValueError as e:
        sys.exit(f"error: --config={value} has no smoke form ({e}), so --smoke cannot shrink it")
    return candidate


def load_config(value: str):
    """The ConfigDict ``--config=FILE[:ARG]`` gives (``FILE`` under the repository root)."""
    path, sep, arg = value.partition(":")
    module = importlib.import_module(os.path.splitext(os.path.normpath(path))[0].replace(os.sep, "."))
    return module.get_config(arg) if sep else module.get_config()


def config_field(config, dotted: str):
    """``config``'s field ``a.b.c``, or ``_MISSING``."""
    for part in dotted.split("."):
        try:
            config = config[part]
        except (KeyError, TypeError, AttributeError):
            return _MISSING
    return config


CODE = ("ddad_jax", "configs", "experiments")  # what a run executes (not the benchmark scripts or docs)


def _code_dirty() -> bool:
    """Whether the code a run executes has uncommitted changes (raises as ``git`` does)."""
    return bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip())


def code_version() -> str:
    """The git tree ids of the code a run executes at HEAD, ``+dirty`` when it has uncommitted
    changes: equal for two commits that differ only in docs, results or benchmark scripts."""
    try:
        trees = [subprocess.run(["git", "rev-parse", f"HEAD:{d}"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()[:12] for d in CODE]
        return "-".join(trees) + ("+dirty" if _code_dirty() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def commit() -> str:
    """The short commit the figures came from, ``+dirty`` if the code that runs (not the
    benchmark scripts or docs) has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        return head + ("+dirty" if _code_dirty() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def mean_std(values: Sequence[Optional[float]], scale: float = 100.0) -> str:
    """``mean ± sample std`` (x ``scale``, 2 decimals) of the values that are not None; one
    value alone has no spread to show, so it is shown as ``80.57 (1 seed)``, never ``± 0.00``."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0] * scale:.2f} (1 seed)"
    return f"{statistics.mean(values) * scale:.2f} ± {statistics.stdev(values) * scale:.2f}"


def fmnist_teacher(out: str, seed: int) -> str:
    """The seeded Fashion-MNIST teacher of ``seed`` under ``out`` (the command
    ``benchmarks/fmnist_ddad.py`` runs, hence the same teacher): trained unless an earlier,
    interrupted invocation with this ``out`` already exported it."""
    workdir = os.path.join(out, f"teacher_seed{seed}")
    if not os.path.exists(os.path.join(workdir, "teacher.json")):
        run_stage(["-m", "experiments.fashion_mnist", "--config=configs/teacher.py:fashion_mnist",
                   f"--workdir={workdir}", f"--config.seed={seed}"], os.path.join(out, f"teacher_seed{seed}.log"))
    return workdir


PER_SEED_ROW = ("student_acc", "wall_s", "teacher_acc", "commit")


def merge_rows(old: List[Dict[str, Any]], method: str, data: str, seed: int, values: Dict[str, Any],
               extra: Optional[Dict[str, Any]] = None, keys: Sequence[str] = PER_SEED_ROW) -> List[Dict[str, Any]]:
    """The list of ``{"method", "data", "seeds", "student_acc": [..], "wall_s": [..], ...}``
    rows with ``seed``'s ``values`` set in row (method, data) -- added or replaced -- each
    row's lists sorted by seed. Rows keep the order they were first added in."""
    rows = [dict(r) for r in old]
    row = next((r for r in rows if (r["method"], r["data"]) == (method, data)), None)
    if row is None:
        row = {"method": method, "data": data, "seeds": [], **{k: [] for k in keys}}
        rows.append(row)
    per_seed = {s: {k: row[k][i] for k in keys if k in row} for i, s in enumerate(row["seeds"])}
    per_seed[seed] = {k: values.get(k) for k in keys}
    row["seeds"] = sorted(per_seed)
    for k in keys:
        row[k] = [per_seed[s].get(k) for s in row["seeds"]]
    row.update(extra or {})
    return rows


def provenance(rows: List[Dict[str, Any]]) -> str:
    """``Code: commit A, B; machine: M`` of a benchmark's rows (every commit a seed ran at)."""
    commits = sorted({c for r in rows for c in r.get("commit", []) if c})
    return f"Code: commit {', '.join(commits)}; machine: {rows[0].get('machine', '?') if rows else '?'}"


def load_rows(path: str) -> List[Dict[str, Any]]:
    if not os.path.exists(path):
        return []
    rows = json.load(open(path))
    if not isinstance(rows, list):
        sys.exit(f"error: {path} is not a list of result rows")
    return rows
