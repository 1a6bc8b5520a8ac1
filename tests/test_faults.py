"""Faults a run must survive or report in one line: evaluation at any batch size on many
devices, corrupt or torn files in a workdir, a workdir of another run or one that cannot
be used, a bad --config file, and a run SIGKILLed at random moments and rerun."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, run_entry
from ddad_jax import checkpoints, data, models, parallel
from ddad_jax.errors import UserError
from ddad_jax.evaluation import EvalSet, _correct_counts, evaluate
from ddad_jax.state import init_variables


def _one_line_error(result, match):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and match in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- evaluation

def _lenet_and_test_split(fmnist_data_dir, n):
    spec = data.get_spec("fashion_mnist")
    x, y = data.load_split(spec, "test", fmnist_data_dir)
    model = models.get_classifier("lenet5_bn", 10, bn_axis_name=parallel.BATCH_AXIS)
    variables = init_variables(model, jax.random.key(3), jnp.zeros((1, 32, 32, 1)))
    return spec, model, variables, x[:n], y[:n]


def _numpy_correct(model, variables, spec, x, y):
    """Correct predictions counted the plain way: one device, large batches, numpy."""
    apply = jax.jit(lambda v, images: model.apply(v, data.normalize(images, spec), train=False))
    predictions = np.concatenate([np.asarray(apply(variables, x[i:i + 500])).argmax(-1)
                                  for i in range(0, len(x), 500)])
    return int(np.sum(predictions == y))


def test_evaluation_with_tiny_batches_on_8_devices_has_no_collective_and_counts_right(fmnist_data_dir):
    # Batch 8 on 8 devices: 251 batches of one example a device (the last one padded). The
    # per-batch sharded programs this replaces each held an all-reduce; hundreds queued at
    # once made XLA:CPU's collective rendezvous time out and abort the process.
    spec, model, variables, x, y = _lenet_and_test_split(fmnist_data_dir, 2003)
    mesh = parallel.make_mesh(8)
    eval_set = EvalSet.build(x, y, spec, 8, mesh)
    assert eval_set.images.shape == (251, 8, 28, 28, 1) and eval_set.num_examples == 2003
    hlo = _correct_counts.lower(parallel.replicate(variables, mesh), eval_set.images, eval_set.labels,
                                model=model, spec=spec, mesh=mesh).compile().as_text()
    for collective in ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter"):
        assert collective not in hlo
    expected = _numpy_correct(model, variables, spec, x, y)
    assert 0 < expected < 2003
    assert evaluate(model, variables, eval_set) == expected / 2003
    # the same without a mesh, and with a batch that is not a multiple of the devices
    assert evaluate(model, variables, EvalSet.build(x, y, spec, 300)) == expected / 2003
    assert evaluate(model, variables, EvalSet.build(x, y, spec, 13, mesh)) == expected / 2003


def test_eval_batch_size_is_checked_and_capped():
    spec = data.get_spec("fashion_mnist")
    x, y = np.zeros((10, 28, 28, 1), np.uint8), np.zeros(10, np.int32)
    with pytest.raises(UserError, match="eval_batch_size must be >= 1, got 0"):
        EvalSet.build(x, y, spec, 0)
    # a batch larger than the split would only be padding: 10 examples -> one batch of 10,
    # rounded up to 16 on 8 devices
    assert EvalSet.build(x, y, spec, 10**9).images.shape[:2] == (1, 10)
    assert EvalSet.build(x, y, spec, 10**9, parallel.make_mesh(8)).images.shape[:2] == (1, 16)


def test_cli_teacher_with_eval_batch_size_8_on_4_cpu_devices(tmp_path, fmnist_data_dir):
    # Aborted with SIGABRT (rc 134) after ~80 s before evaluation became one program.
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = run_entry("fashion_mnist", "--config=configs/teacher.py:fashion_mnist,smoke",
                       f"--workdir={tmp_path / 't'}", f"--config.data_dir={fmnist_data_dir}",
                       "--config.eval_batch_size=8", "--config.eval_examples=2000", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.load(open(tmp_path / "t" / "teacher.json"))["test_examples"] == 2000
