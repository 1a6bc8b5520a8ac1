"""One run per workdir: ``workdir.locked`` (the lock file ``run.lock``), and two launches of
the same command at once through ``experiments.fashion_mnist``."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, xla_flags
from ddad_jax import workdir as workdir_lib
from ddad_jax.errors import UserError


def _lock(workdir):
    return os.path.join(workdir, workdir_lib.LOCK)


def _write_lock(workdir, **holder):
    os.makedirs(workdir, exist_ok=True)
    with open(_lock(workdir), "w") as f:
        json.dump({"host": socket.gethostname(), "started": "2026-12-07T10:00:00+00:00", **holder}, f)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_names_this_process_while_held_and_is_gone_after(tmp_path):
    workdir = str(tmp_path / "run")  # created by the lock: nothing may be written before it
    with workdir_lib.locked(workdir):
        holder = json.load(open(_lock(workdir)))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["started"] and holder["argv"] == sys.argv
    assert not os.path.exists(_lock(workdir)) and os.path.isdir(workdir)
    with pytest.raises(RuntimeError):  # released on errors too
        with workdir_lib.locked(workdir):
            raise RuntimeError
    assert not os.path.exists(_lock(workdir))


def test_a_live_holder_is_named_and_nothing_is_changed(tmp_path):
    workdir = str(tmp_path / "run")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(workdir, pid=sleeper.pid, process_start=workdir_lib._process_start(sleeper.pid))
        before = open(_lock(workdir)).read()
        with pytest.raises(UserError, match=rf"is in use by process {sleeper.pid} on {socket.gethostname()} since "
                                            r"2026-12-07T10:00:00\+00:00"):
            with workdir_lib.locked(workdir):
                pytest.fail("entered a workdir another run holds")
        assert open(_lock(workdir)).read() == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_another_hosts_lock_is_respected(tmp_path):
    workdir = str(tmp_path / "run")
    _write_lock(workdir, pid=_dead_pid(), host="some-other-host")  # its liveness cannot be checked from here
    with pytest.raises(UserError, match="in use by process .* on some-other-host"):
        with workdir_lib.locked(workdir):
            pass


def test_a_lock_whose_holder_is_gone_is_taken_over_with_a_warning(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    _write_lock(workdir, pid=_dead_pid())
    with workdir_lib.locked(workdir):
        assert json.load(open(_lock(workdir)))["pid"] == os.getpid()
    assert "which is gone; taking it over" in capsys.readouterr().err
    # a pid reused by a new process (another start time) is not the holder either
    _write_lock(workdir, pid=os.getpid(), process_start="1")
    with workdir_lib.locked(workdir):
        pass
    assert "which is gone; taking it over" in capsys.readouterr().err


@pytest.mark.slow
def test_the_same_command_launched_twice_at_once_runs_once(tmp_path, fmnist_data_dir):
    workdir = str(tmp_path / "run")
    # a smoke teacher run of 40 epochs (an evaluation and a checkpoint each): the winner holds
    # the lock for many seconds after both have started, so the loser meets it whatever the load
    command = [sys.executable, "-m", "experiments.fashion_mnist", "--config=configs/teacher.py:fashion_mnist,smoke",
               f"--workdir={workdir}", f"--config.data_dir={fmnist_data_dir}", "--config.num_epochs=40"]
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags()}
    procs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        deadline, loser = time.time() + 300, None
        while loser is None and time.time() < deadline:
            loser = next((p for p in procs if p.poll() is not None), None)
            time.sleep(0.2)
        assert loser is not None, "neither launch ended"
        winner = procs[1 - procs.index(loser)]
        err = loser.stderr.read()
        assert loser.returncode == 2, err[-2000:]
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and f"is in use by process {winner.pid} on {socket.gethostname()}" in errors[0], err
        assert "Traceback" not in err
        assert winner.poll() is None  # still running, undisturbed
        assert json.load(open(_lock(workdir)))["pid"] == winner.pid
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
