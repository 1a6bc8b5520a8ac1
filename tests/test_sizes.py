"""Impossible sizes refused in seconds, before anything is compiled: the activations a step
keeps, estimated from shapes alone, against the memory the devices have."""

import os
import time

import pytest

from conftest import one_line_error, run_entry
from ddad_jax import models, parallel
from ddad_jax.errors import UserError
from ddad_jax.trainers import sizes


def test_activation_bytes_of_lenet5_bn_by_hand():
    # every submodule output of one 32x32x1 image: conv1 28x28x6 and its BatchNorm, conv2
    # 10x10x16 and its BatchNorm, conv3 1x1x120 and its BatchNorm, Dense 84, Dense 10, and the
    # network's own output (10), float32
    by_hand = 4 * (2 * 28 * 28 * 6 + 2 * 10 * 10 * 16 + 2 * 120 + 84 + 10 + 10)
    assert sizes.activation_bytes(models.get_classifier("lenet5_bn", 10), (32, 32, 1)) == by_hand


def test_a_step_that_cannot_fit_is_refused_with_the_number_computed():
    mesh = parallel.make_mesh(1)
    lenet = {"teacher lenet5_bn": (models.get_classifier("lenet5_bn", 10), (32, 32, 1), {})}
    per_image = 2 * sizes.activation_bytes(*lenet["teacher lenet5_bn"][:2])
    limit = (1000 * per_image, "a test's", 1)
    assert sizes.check_step_memory(1000, mesh, lenet, limit=limit) == 1000 * per_image  # fits exactly
    with pytest.raises(UserError, match=r"a step needs about 0\.\d GiB \(batch_size=1001: 1001 images per device x 2 x "
                                        r"51 KiB of activations per image in teacher lenet5_bn\), more than a test's "
                                        r"0\.\d GiB of memory; lower batch_size"):
        sizes.check_step_memory(1001, mesh, lenet, limit=limit)
    with pytest.raises(UserError, match="plus 1.0 GiB kept per device"):
        sizes.check_step_memory(1, mesh, lenet, extra_bytes_per_device=2 ** 30, limit=limit)
    with pytest.raises(UserError, match=r"steps = 2147483648 is beyond"):
        sizes.check_int32(steps=2 ** 31)


@pytest.mark.parametrize("config, needs_teacher", [("configs/ddad.py:fashion_mnist,smoke", True),
                                                   ("configs/cmi.py:fashion_mnist,smoke", True),
                                                   ("configs/kd.py:fashion_mnist,smoke", False),
                                                   ("configs/hidfd.py:fashion_mnist,smoke", True),
                                                   ("configs/teacher.py:fashion_mnist,smoke", False)])
def test_a_batch_of_a_million_ends_in_seconds_as_one_line(tmp_path, fmnist_smoke_teacher, fmnist_data_dir, config,
                                                        needs_teacher):
    workdir = tmp_path / "w"
    teacher = [f"--config.teacher_dir={fmnist_smoke_teacher}"] if needs_teacher else []
    t0 = time.time()
    result = run_entry("fashion_mnist", f"--config={config}", f"--workdir={workdir}", *teacher,
                       f"--config.data_dir={fmnist_data_dir}", "--config.batch_size=1000000", timeout=300)
    one_line_error(result, "a step needs about")
    assert "batch_size=1000000" in result.stderr and "lower batch_size" in result.stderr
    assert time.time() - t0 < 120  # the unchecked run worked for ~9 minutes before failing
    assert not os.path.exists(workdir)


def test_an_evaluation_chunk_that_cannot_fit_is_refused_before_anything_compiles(tmp_path, fmnist_data_dir,
                                                                               monkeypatch):
    """The test split is evaluated in chunks of ``eval_batch_size`` (capped at the examples,
    rounded up to the devices), forward only: one pass of activations. The smoke teacher's
    training step (16 images x 2 passes x 51808 bytes = 1.66 MB) fits a 2 MB limit; an
    evaluation chunk of 64 images (64 x 1 x 51808 = 3.3 MB) does not, and is named."""
    from configs import teacher as teacher_config
    from ddad_jax import loop
    per_image = sizes.activation_bytes(models.get_classifier("lenet5_bn", 10), (32, 32, 1))
    assert per_image == 51808
    mesh = parallel.make_mesh(1)
    lenet = {"lenet5_bn": (models.get_classifier("lenet5_bn", 10), (32, 32, 1), {"train": False})}
    limit = (2_000_000, "a test's", 1)
    assert sizes.check_eval_memory(32, 64, mesh, lenet, limit=limit) == 32 * per_image
    assert sizes.check_eval_memory(10 ** 9, 8, mesh, lenet, limit=limit) == 8 * per_image  # capped at the examples
    assert sizes.check_eval_memory(5, 64, parallel.make_mesh(4), lenet, limit=limit) == 2 * per_image  # 8 over 4
    monkeypatch.setattr(sizes, "memory_limit", lambda mesh: limit)
    config = teacher_config.get_config("fashion_mnist,smoke")
    config.data_dir, config.num_devices, config.eval_examples, config.eval_batch_size = fmnist_data_dir, 1, 64, 1000
    with pytest.raises(UserError, match=r"a step needs about 0\.0 GiB \(eval_batch_size=64: 64 images per device x 1 x "
                                        r"51 KiB of activations per image in lenet5_bn\), more than a test's 0\.0 GiB "
                                        r"of memory; lower eval_batch_size"):
        loop.train_and_evaluate(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w" / "checkpoints")
