"""Mistakes named in words a user can act on: an unknown generator term lists the terms, a
teacher with NaN weights is refused at load naming its first bad layer, and a non-finite
metric is blamed on the part of the step that made it, never on a diagnostic computed from it."""

import os
import shutil

import jax
import numpy as np
import pytest

from conftest import one_line_error, run_entry
from ddad_jax import checkpoints, loop, teacher as teacher_lib
from ddad_jax.errors import UserError


def test_an_unknown_generator_term_lists_the_terms(tmp_path):
    result = run_entry("fashion_mnist", "--config=configs/ddad.py:fashion_mnist,smoke", f"--workdir={tmp_path}/w",
                       "--config.generator_terms.bogus=1.0")
    one_line_error(result, "unknown config field 'generator_terms.bogus'")
    assert "generator terms: bn, adversarial, adversarial_kl" in result.stderr
    assert not os.path.exists(tmp_path / "w")


def test_a_parameter_of_a_plain_weight_is_named(tmp_path):
    one_line_error(run_entry("fashion_mnist", "--config=configs/ddad.py:fashion_mnist,smoke", f"--workdir={tmp_path}/w",
                             "--config.generator_terms.bn.temperature=2"),
                   "unknown config field 'generator_terms.bn.temperature' (generator_terms.bn is a float")


def test_a_teacher_with_nan_weights_is_refused_at_load_naming_the_layer(tmp_path, fmnist_smoke_teacher):
    teacher_dir = str(tmp_path / "teacher")
    shutil.copytree(fmnist_smoke_teacher, teacher_dir)
    model, variables, _ = teacher_lib.load_teacher(teacher_dir, "lenet5_bn", "fashion_mnist")
    variables = jax.tree.map(np.asarray, variables)
    variables["params"]["Conv_1"]["kernel"][0, 0, 0, :3] = np.nan
    checkpoints.save_variables(os.path.join(teacher_dir, teacher_lib.TEACHER_SUBDIR), variables)
    with pytest.raises(UserError, match=r"non-finite values, first in params/Conv_1/kernel \(3 of \d+ values\)"):
        teacher_lib.load_teacher(teacher_dir, "lenet5_bn", "fashion_mnist")
    variables["batch_stats"]["BatchNorm_0"]["var"][:] = np.inf  # batch_stats sorts before params
    checkpoints.save_variables(os.path.join(teacher_dir, teacher_lib.TEACHER_SUBDIR), variables)
    with pytest.raises(UserError, match=r"first in batch_stats/BatchNorm_0/var"):
        teacher_lib.load_teacher(teacher_dir, "lenet5_bn", "fashion_mnist")


def test_a_non_finite_metric_is_blamed_on_the_part_that_computed_it_first():
    metrics = ["diversity/class_entropy", "diversity/feature_distance", "generated/student_agreement",
               "student/loss", "gen/bn", "gen/adversarial", "loss", "synth/loss"]
    order = sorted(metrics, key=loop._computed_order)  # pylint: disable=protected-access
    assert order == ["synth/loss", "gen/adversarial", "gen/bn", "student/loss", "loss",
                     "generated/student_agreement", "diversity/class_entropy", "diversity/feature_distance"]
    assert loop._part("gen/bn") == "the generator step"  # pylint: disable=protected-access
    assert loop._part("student/loss") == "the student step"  # pylint: disable=protected-access
    assert loop._part("loss") == "the training step"  # pylint: disable=protected-access
