"""Every benchmark script runs end to end in its smoke mode: ``python benchmarks/<script>.py
--smoke --results DIR`` launches its stages at their configs' smoke sizes, collects the runs and
writes JSON and Markdown shaped like the published ones in ``benchmarks/results/`` -- into DIR,
never into README.md or ``benchmarks/results/``. So a script that stops working fails here, not
on the day its figures are regenerated."""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, xla_flags

RESULTS = os.path.join(REPO, "benchmarks", "results")


@pytest.fixture(scope="module")
def smoke_env(fmnist_data_dir, tmp_path_factory):
    """The scripts' environment: one CPU device per process unless a stage splits its host (as
    a user's), the prepared Fashion-MNIST as tfds's data dir, a JAX compilation cache shared by
    every stage (``tests/run_all.sh``'s, else one for this worker)."""
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp_path_factory.mktemp("jit_cache"))
    return {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags(), "TFDS_DATA_DIR": fmnist_data_dir,
            "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                                                                         "0.2")}


def published_files():
    """{path: sha256} of README.md and everything under benchmarks/results/."""
    paths = [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(RESULTS, "**"), recursive=True)]
    return {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in sorted(paths) if os.path.isfile(p)}


def run_smoke(script, results, env, *args):
    """``python benchmarks/<script>.py --smoke --results RESULTS ARGS`` from the repository
    root; asserts it succeeded and left README.md and benchmarks/results/ as they were."""
    before = published_files()
    proc = subprocess.run([sys.executable, f"benchmarks/{script}.py", "--smoke", f"--results={results}", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout[-3000:] + proc.stderr[-3000:]
    for log in re.findall(r"see (\S+\.log)", proc.stderr):  # a failed stage: its own log's end
        output += f"\n--- {log}:\n" + open(log).read()[-3000:]
    assert proc.returncode == 0, output
    assert "Traceback" not in proc.stderr, output
    assert published_files() == before, "README.md or benchmarks/results/ changed"
    return proc


def out_with_teacher(tmp_path, teacher_dir):
    """``--out`` for a script whose stages start from ``common.fmnist_teacher``, holding seed 0's
    teacher already: a copy of the session's ``fmnist_smoke_teacher`` (the same
    ``configs/teacher.py:fashion_mnist,smoke`` run, in-process), which ``fmnist_teacher`` collects
    as an interrupted invocation's, so the script goes straight on to its own stages. The teacher
    stage itself still runs end to end here: in test_fmnist_supervised_smoke (through
    ``fmnist_teacher``) and test_fmnist_ddad_smoke (``fmnist_ddad.py``'s own stage)."""
    out = tmp_path / "runs"
    shutil.copytree(teacher_dir, out / "teacher_seed0")
    return f"--out={out}"


def keys(result):
    """A result's top-level keys: a dict's, or the union of a list of rows'."""
    if isinstance(result, list):
        assert result and all(isinstance(row, dict) for row in result), result
        return set().union(*result)
    return set(result)


def table_headers(markdown):
    """The header line of every Markdown table (the line above each ``|---`` line)."""
    lines = markdown.splitlines()
    return {lines[i - 1] for i, line in enumerate(lines) if i and line.startswith("|---")}


def load_pair(results, name, ext):
    """(the smoke run's, the published) ``name.ext``: JSON parsed, Markdown as text."""
    texts = [open(os.path.join(d, f"{name}.{ext}")).read() for d in (str(results), RESULTS)]
    return [json.loads(t) for t in texts] if ext == "json" else texts


def assert_shaped_like_published(results, name, json_keys=True):
    """``results/name.{json,md}`` have the published files' structure: the same top-level keys
    (or row keys), the same title and the same tables."""
    smoke, published = load_pair(results, name, "json")
    if json_keys:
        assert keys(smoke) == keys(published), (sorted(keys(smoke)), sorted(keys(published)))
    smoke_md, published_md = load_pair(results, name, "md")
    assert smoke_md.splitlines()[0] == published_md.splitlines()[0]  # the title
    assert table_headers(smoke_md) == table_headers(published_md) != set()
    return smoke


@pytest.mark.slow
def test_speed_smoke(smoke_env, tmp_path):
    run_smoke("speed", tmp_path, smoke_env)
    rows = assert_shaped_like_published(tmp_path, "speed_cpu")
    assert [r["workload"] for r in rows] == [f"fmnist/{p}" for p in ("ddad_iteration", "generator_step",
                                                                        "student_step", "teacher_inference")]
    meta, published_meta = load_pair(tmp_path, "speed_cpu_meta", "json")
    assert keys(meta) == keys(published_meta)


@pytest.mark.slow
def test_profile_ops_smoke(smoke_env, tmp_path):
    run_smoke("profile_ops", tmp_path, smoke_env)
    result = assert_shaped_like_published(tmp_path, "profile_cpu", json_keys=False)
    _, published = load_pair(tmp_path, "profile_cpu", "json")
    assert set(result) == {"fmnist", "command"}  # the smoke workload; the published also has cifar
    for part in (None, "jax", "torch"):
        pick = (lambda r: r["fmnist"]) if part is None else (lambda r, p=part: r["fmnist"][p])
        assert keys(pick(result)) == keys(pick(published)), part


@pytest.mark.slow
def test_fmnist_ddad_smoke(smoke_env, tmp_path):
    """Also the README's first two commands through the entry point on real Fashion-MNIST (a
    smoke teacher, then DDAD from it): the script's two stages are exactly those commands, and
    compiled as a user's are (XLA's default optimisation, not the suite's quicker level)."""
    run_smoke("fmnist_ddad", tmp_path, {**smoke_env, "XLA_FLAGS": ""})
    result = assert_shaped_like_published(tmp_path, "fmnist_ddad")
    assert result["seeds"] == [0] and len(result["student_acc"]) == 1
    runs = tmp_path / "runs"
    assert "[teacher] done: lenet5_bn on fashion_mnist: test accuracy" in (runs / "teacher_seed0.log").read_text()
    out = (runs / "ddad_seed0.log").read_text()
    assert "steps/s | ETA" in out and "[ddad] done" in out
    summary = json.load(open(runs / "ddad_seed0" / "summary.json"))
    assert summary["iterations"] == 4 and summary["teacher"] == "lenet5_bn"
    assert summary["finetune_iterations"] == 2 and "[ddad] fine-tune epoch 3" in out


@pytest.mark.slow
def test_fmnist_supervised_smoke(smoke_env, tmp_path):
    run_smoke("fmnist_supervised", tmp_path, smoke_env)
    rows = assert_shaped_like_published(tmp_path, "fmnist_supervised")
    assert [r["method"] for r in rows] == ["scratch", "kd"]


@pytest.mark.slow
def test_fmnist_hybrid_smoke(smoke_env, tmp_path, fmnist_smoke_teacher):
    proc = run_smoke("fmnist_hybrid", tmp_path, smoke_env, out_with_teacher(tmp_path, fmnist_smoke_teacher))
    rows = assert_shaped_like_published(tmp_path, "fmnist_hybrid")
    assert [r["method"] for r in rows] == ["KD"]
    assert "ddad seed 0: not in fmnist_ddad.json" in proc.stdout  # read from --results, not the published one


@pytest.mark.slow  # ~1-1.5 min alone on 2 cores
def test_fmnist_datafree_smoke(smoke_env, tmp_path, fmnist_smoke_teacher):
    run_smoke("fmnist_datafree", tmp_path, smoke_env, out_with_teacher(tmp_path, fmnist_smoke_teacher))
    rows = assert_shaped_like_published(tmp_path, "fmnist_datafree")
    assert [r["method"] for r in rows] == ["DDAD", "DDAD+ without the pool"]
    assert os.path.getsize(tmp_path / "fmnist_datafree.png") > 10_000


@pytest.mark.slow  # ~1-1.5 min alone on 2 cores
def test_fmnist_export_smoke(smoke_env, tmp_path, fmnist_smoke_teacher):
    run_smoke("fmnist_export", tmp_path, smoke_env, out_with_teacher(tmp_path, fmnist_smoke_teacher))
    result = assert_shaped_like_published(tmp_path, "fmnist_export")
    assert result["calibration_images"] == 16 and [r["test_examples"] for r in result["rows"]] == [500]


def test_smoke_never_writes_the_published_results(smoke_env):
    before = published_files()
    proc = subprocess.run([sys.executable, "benchmarks/fmnist_ddad.py", "--smoke", f"--results={RESULTS}"],
                          cwd=REPO, env=smoke_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith("error: --smoke never writes")
    assert published_files() == before
