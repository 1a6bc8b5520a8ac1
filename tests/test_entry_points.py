"""End-to-end smoke runs of every experiment entry point, and their command-line errors:
each error is one line on stderr with exit status 2."""

import json
import os

import pytest

from conftest import one_line_error, run_entry, xla_flags


def _ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# Fashion-MNIST's teacher then DDAD through the entry point on real data: the two stages of
# benchmarks/fmnist_ddad.py --smoke, whose outputs tests/test_benchmark_smoke.py checks as this
# file checks CIFAR's (one run of those commands in the suite instead of two).


@pytest.mark.slow
def test_cifar_teacher_then_ddad_on_standin_data(tmp_path, cifar_data_dir):
    """CIFAR-10's teacher and DDAD through the entry point (CIFAR-100 runs in test_inversion's
    CIFAR protocols)."""
    teacher_dir, ddad_dir = str(tmp_path / "teacher"), str(tmp_path / "ddad")
    _ok(run_entry("cifar10", "--config=configs/teacher.py:cifar10,smoke", f"--workdir={teacher_dir}",
                  f"--config.data_dir={cifar_data_dir}"))
    meta = json.load(open(os.path.join(teacher_dir, "teacher.json")))
    assert meta["dataset"] == "cifar10" and meta["model"] == "wrn16_1"
    _ok(run_entry("cifar10", "--config=configs/ddad.py:cifar10,smoke", f"--workdir={ddad_dir}",
                  f"--config.data_dir={cifar_data_dir}", f"--config.teacher_dir={teacher_dir}"))
    assert sorted(os.listdir(os.path.join(ddad_dir, "samples"))) == ["epoch_0001.png", "epoch_0002.png"]


# The KD protocol (CTKD: attention maps on a WRN) and HiDFD's CIFAR-10 setting, each its own test
# (the suite's two workers share them out) from a random WRN-16-1 teacher: what runs is the point.
@pytest.mark.slow
def test_cifar_ctkd_on_standin_data(tmp_path, cifar_data_dir, cifar_random_teachers):
    out = _ok(run_entry("cifar10", "--config=configs/kd.py:cifar10,smoke", f"--workdir={tmp_path / 'kd'}",
                        f"--config.data_dir={cifar_data_dir}", f"--config.teacher_dir={cifar_random_teachers['cifar10']}",
                        "--config.student_objective=ctkd")).stdout
    assert "(ctkd, 64 real images)" in out


@pytest.mark.slow
def test_cifar_hidfd_on_standin_data(tmp_path, cifar_data_dir, cifar_random_teachers):
    out = _ok(run_entry("cifar10", "--config=configs/hidfd.py:cifar10,smoke", f"--workdir={tmp_path / 'hidfd'}",
                        f"--config.data_dir={cifar_data_dir}", f"--config.teacher_dir={cifar_random_teachers['cifar10']}")).stdout
    assert "from 40 real images" in out and "[hidfd] gan epoch 1" in out and "[hidfd] student epoch 2" in out


def test_unknown_config_field(tmp_path):
    one_line_error(run_entry("fashion_mnist", "--config=configs/ddad.py:fashion_mnist,smoke",
                              f"--workdir={tmp_path}", "--config.student_objectve=kl"), "did you mean 'student_objective'")


def test_config_for_another_dataset(tmp_path):
    one_line_error(run_entry("fashion_mnist", "--config=configs/ddad.py", f"--workdir={tmp_path}"),
                    "this config is for 'cifar10'")


def test_unknown_config_option(tmp_path):
    one_line_error(run_entry("fashion_mnist", "--config=configs/ddad.py:fashion_mnist,tiny",
                              f"--workdir={tmp_path}"), "unknown option")


def test_missing_teacher_checkpoint(tmp_path, fmnist_data_dir):
    one_line_error(run_entry("fashion_mnist", "--config=configs/ddad.py:fashion_mnist,smoke",
                              f"--workdir={tmp_path / 'w'}", f"--config.data_dir={fmnist_data_dir}",
                              f"--config.teacher_dir={tmp_path / 'none'}"), "no teacher checkpoint")


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_dataset_not_prepared(tmp_path, dataset):
    one_line_error(run_entry(dataset, f"--config=configs/teacher.py:{dataset},smoke",
                              f"--workdir={tmp_path / 'w'}", f"--config.data_dir={tmp_path / 'empty'}"),
                    f"python -m ddad_jax.data.prepare {dataset}")
    assert not os.path.exists(tmp_path / "w")  # nothing written before the data was found


@pytest.mark.slow
def test_batch_not_divisible_by_device_count(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    env = {"XLA_FLAGS": xla_flags(8)}
    one_line_error(run_entry("fashion_mnist", "--config=configs/ddad.py:fashion_mnist,smoke",
                              f"--workdir={tmp_path / 'w'}", f"--config.teacher_dir={fmnist_smoke_teacher}",
                              f"--config.data_dir={fmnist_data_dir}", "--config.batch_size=12", env=env),
                    "batch_size=12 is not divisible by the 8 devices")


@pytest.mark.parametrize("flag, match", [("--config.num_epochs=-3", "num_epochs must be >= 1"),
                                         ("--config.log_every=0", "log_every must be >= 1"),
                                         ("--config.generator_terms.bn=-1", "generator_terms.bn must be")])
def test_values_out_of_range_are_one_line_errors_before_anything_is_written(tmp_path, flag, match):
    one_line_error(run_entry("fashion_mnist", "--config=configs/fmnist_lenet5.py:smoke",
                              f"--workdir={tmp_path / 'w'}", flag), match)
    assert not os.path.exists(tmp_path / "w")
