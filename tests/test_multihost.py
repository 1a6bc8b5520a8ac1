"""Two processes of 4 CPU devices each, started as a user would start two hosts (the real
entry point with ``--coordinator_address/--num_processes/--process_id``, one shared
workdir), give the same DDAD run as one process of 8 devices: the same losses, the same
saved parameters, one set of metrics and summary written by process 0."""

import json
import os
import socket
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, xla_flags

# a short DDAD run: 3 iterations (one compiled step), checkpointed at the end, a sample grid
OVERRIDES = {"num_epochs": 1, "iters_per_epoch": 3, "finetune_epochs": 0, "sample_grid": 8}


@pytest.fixture(scope="module")
def random_teacher(tmp_path_factory):
    """An exported LeNet-5 (BN) teacher, randomly initialised with non-trivial running statistics."""
    from ddad_jax import models, teacher
    from ddad_jax.state import init_variables
    model = models.get_classifier("lenet5_bn", 10)
    variables = init_variables(model, jax.random.key(7), jnp.zeros((1, 32, 32, 1)))
    variables = {**variables, "batch_stats": jax.tree.map(lambda x: x + 0.5, variables["batch_stats"])}
    path = str(tmp_path_factory.mktemp("fmnist_random_teacher"))
    teacher.export(path, variables, {"model": "lenet5_bn", "dataset": "fashion_mnist", "test_acc": 0.0})
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_processes(workdir, teacher_dir, data_dir, n=2, devices_each=4):
    port = _free_port()
    args = ["--config=configs/fmnist_lenet5.py:smoke", f"--config.teacher_dir={teacher_dir}",
            f"--config.data_dir={data_dir}", f"--workdir={workdir}", f"--coordinator_address=localhost:{port}",
            f"--num_processes={n}"] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": xla_flags(devices_each)}
    return [subprocess.Popen([sys.executable, "-m", "experiments.fashion_mnist", *args, f"--process_id={i}"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(n)]


def _losses(workdir):
    """Every logged training metric, by step (evaluations and wall-clock times left out)."""
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: {k: v for k, v in r.items() if "/" in k and not k.startswith("test/")}
            for r in records if "student/loss" in r}


def _saved_state(workdir):
    """The newest checkpoint of ``workdir``, read on one device as it was saved."""
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                               item_handlers=ocp.StandardCheckpointHandler()) as manager:
        step = manager.latest_step()
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              manager.item_metadata(step).tree)
        return step, manager.restore(step, args=ocp.args.StandardRestore(target))


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path, fmnist_data_dir, random_teacher):
    from configs import fmnist_lenet5
    from ddad_jax import loop

    two, one = str(tmp_path / "two_processes"), str(tmp_path / "one_process")
    procs = _start_processes(two, random_teacher, fmnist_data_dir)
    try:  # meanwhile, the reference: this process, 8 devices
        config = fmnist_lenet5.get_config("smoke")
        config.update(dict(OVERRIDES, teacher_dir=random_teacher, data_dir=fmnist_data_dir))
        assert jax.process_count() == 1 and jax.device_count() == 8
        reference = loop.train_and_evaluate(config, one)
        outputs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"
    assert "done: student" in outputs[0] and "done: student" in outputs[1]
    assert "| student/loss" in outputs[0] and "| student/loss" not in outputs[1]  # process 0 reports

    summary = json.load(open(os.path.join(two, "summary.json")))
    assert summary["devices"] == 8 and summary["iterations"] == 3
    assert summary["student_acc"] == reference["student_acc"]  # the same 64 test images, counted once
    assert summary["teacher_acc"] == reference["teacher_acc"]
    assert sorted(os.listdir(os.path.join(two, "samples"))) == ["epoch_0001.png"]
    # every metric logged once, by process 0, equal to the one-process run's
    losses_two, losses_one = _losses(two), _losses(one)
    assert sorted(losses_two) == [1, 2, 3]
    chex.assert_trees_all_close(losses_two, losses_one, rtol=2e-4, atol=1e-5)
    (step_two, state_two), (step_one, state_one) = _saved_state(two), _saved_state(one)
    assert step_two == step_one == 3
    chex.assert_trees_all_close(state_two["generator"], state_one["generator"], rtol=2e-3, atol=2e-5)
    chex.assert_trees_all_close(state_two["student"], state_one["student"], rtol=2e-3, atol=2e-5)


# ---------------------------------------------------------------- when a process joins a distributed run

_CLUSTER_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                 "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE")


@pytest.fixture
def joins(monkeypatch):
    """The calls ``initialize_distributed`` makes to ``jax.distributed.initialize`` (recorded,
    not made), in an environment with no cluster variables."""
    from ddad_jax import parallel
    for name in _CLUSTER_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel.importlib.util, "find_spec", lambda name: None)  # no libtpu
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    return calls


def test_a_plain_run_contacts_nothing(joins):
    from ddad_jax import parallel
    assert parallel.cluster_environment() is None
    assert parallel.initialize_distributed() is False and joins == []


def test_cluster_environments_are_detected_from_their_variables(joins, monkeypatch):
    from ddad_jax import parallel
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: a plain run
    assert parallel.cluster_environment() is None
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert parallel.cluster_environment() == "SLURM"
    assert parallel.initialize_distributed() is True  # JAX reads the rest from SLURM itself
    assert joins == [{"coordinator_address": None, "num_processes": None, "process_id": None}]
    assert parallel.initialize_distributed(num_processes=1) is False and len(joins) == 1  # forced single
    for name in slurm:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1531576320.0;tcp://10.96.0.1:34911")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert parallel.cluster_environment() == "Open MPI"


def test_explicit_settings_are_passed_on_and_a_failure_is_one_line(joins, monkeypatch):
    from ddad_jax import parallel
    from ddad_jax.errors import UserError
    assert parallel.initialize_distributed("10.0.0.1:1234", 2, 1) is True
    assert joins == [{"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}]

    def unreachable(**kwargs):
        raise RuntimeError("DEADLINE_EXCEEDED: Barrier timed out\nmore lines")

    monkeypatch.setattr(jax.distributed, "initialize", unreachable)
    with pytest.raises(UserError, match=r"cannot join the coordinator 10.0.0.1:1234 as process 1 of 2 "
                                        r"\(DEADLINE_EXCEEDED: Barrier timed out\); every process needs"):
        parallel.initialize_distributed("10.0.0.1:1234", 2, 1)
