"""Reproducible under load: a run's bits do not depend on what else the machine is doing.

Issue 33 suspected machine load (the order of cross-device sums on the split CPU host) for a
seed's teacher coming out 90.67 % once and 90.72 % another time. These tests launch the same
short run twice as a user does (``python -m experiments.fashion_mnist``, the launcher's own
split into four host devices, so cross-device sums are in every step), the second beside a
CPU-burning process, and ask for bit-identical variables. They pass: XLA's CPU
collectives and thread pool reduce in a fixed order whatever the load. What does change the
bits is the CPU's instruction set and the library versions (docs/reproducibility.md).

The commands are those other tests launch too (test_benchmark_smoke's teacher stage,
test_faults' DDAD run), so in the suite their programs come from the shared compilation cache.
"""

import contextlib
import json
import os
import subprocess
import sys

import jax
import pytest

from conftest import REPO, xla_flags
from ddad_jax import teacher, workdir as workdir_lib
from ddad_jax.export import run as export_run


@contextlib.contextmanager
def cpu_burner():
    """A busy-looping process for the duration of the block: it takes a core from the run's
    thread pool and preempts its threads at times the run does not choose."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def launch(args, workdir):
    """``python -m experiments.fashion_mnist ARGS --workdir=WORKDIR`` as the README launches it."""
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags()}  # the launcher splits the CPU into 4 devices
    result = subprocess.run([sys.executable, "-m", "experiments.fashion_mnist", *args, f"--workdir={workdir}"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def quiet_and_busy(args, tmp_path):
    """The same command on a quiet machine, then beside a CPU burner: the two workdirs."""
    quiet = launch(args, str(tmp_path / "quiet"))
    with cpu_burner():
        busy = launch(args, str(tmp_path / "busy"))
    return quiet, busy


@pytest.mark.slow
def test_a_teacher_run_beside_a_cpu_burner_ends_with_the_same_bits(tmp_path, fmnist_data_dir):
    runs = quiet_and_busy(["--config=configs/teacher.py:fashion_mnist,smoke", f"--config.data_dir={fmnist_data_dir}"],
                          tmp_path)
    fingerprints = [workdir_lib.variables_fingerprint(jax.device_get(
        teacher.load_teacher(w, "lenet5_bn", "fashion_mnist")[1])) for w in runs]
    assert fingerprints[0] == fingerprints[1], fingerprints


@pytest.mark.slow
def test_a_ddad_run_beside_a_cpu_burner_ends_with_the_same_bits(tmp_path, fmnist_data_dir, fmnist_smoke_teacher):
    runs = quiet_and_busy(["--config=configs/ddad.py:fashion_mnist,smoke", "--config.checkpoint_every=1",
                           f"--config.teacher_dir={fmnist_smoke_teacher}", f"--config.data_dir={fmnist_data_dir}"],
                          tmp_path)
    assert [json.load(open(os.path.join(w, "summary.json")))["devices"] for w in runs] == [4, 4]
    states = [export_run.final_state(w) for w in runs]
    assert states[0][0] == states[1][0] == 6, (states[0][0], states[1][0])  # 2 epochs of 2, 1 fine-tuning epoch of 2
    fingerprints = [workdir_lib.variables_fingerprint(tree) for _, tree in states]
    assert fingerprints[0] == fingerprints[1], fingerprints
