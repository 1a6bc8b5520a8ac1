"""The student's own discrepancy (``student_discrepancy``) and the student-only fine-tuning
phase after the adversarial epochs (``finetune_epochs``, ``finetune_lr``,
``finetune_discrepancy``)."""

import os
import shutil

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import ddad as ddad_config
from conftest import tiny_ddad
from ddad_jax import losses, parallel, state as state_lib, train
from ddad_jax.errors import UserError
from ddad_jax.methods import ddad


def _one_iteration(student_discrepancy, adversarial=True):
    """One iteration with one student step; returns (hp, states before and after, metrics,
    the student loss recomputed by hand under L1 and under KL from the same latents)."""
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.batch_size, config.student_steps_per_generator_step = 8, 1
    config.student_discrepancy = student_discrepancy
    mesh, t_model, t_vars, gen, student, state = tiny_ddad(config)
    hp = train.hyper_from_config(config)
    before = jax.device_get(state)
    state = ddad.place_state(state, hp, mesh)
    rng = jax.random.key(3)
    step = ddad.make_iteration(t_model, hp, mesh, adversarial=adversarial)
    state, metrics = step(state, parallel.replicate(t_vars, mesh), rng)
    after = jax.device_get(state)
    # The student step's batch: the latents the iteration draws, through the generator as
    # the student step sees it (updated by the generator step, if there was one).
    _, k_student = jax.random.split(jax.random.fold_in(rng, 0))
    z = ddad.draw_latents(k_student, hp, (1, hp.batch_size))[0]
    images, _ = gen.clone(bn_axis_name=None).apply(state_lib.variables_of(after.generator), z, train=True,
                                                   mutable=["batch_stats"])
    t = t_model.clone(bn_axis_name=None).apply(t_vars, images, train=False)
    s = student.clone(bn_axis_name=None).apply(state_lib.variables_of(before.student), images, train=True)
    by_hand = {"l1": float(losses.l1_discrepancy(s, t)), "kl": float(losses.kl_discrepancy(s, t))}
    return hp, before, after, jax.device_get(metrics), by_hand


@pytest.mark.parametrize("student_discrepancy, expected", [("kl", "kl"), ("", "l1"), ("l1", "l1")])
def test_student_minimises_its_own_discrepancy(student_discrepancy, expected):
    hp, _, _, metrics, by_hand = _one_iteration(student_discrepancy)
    assert hp.discrepancy == "l1" and hp.student_loss_kind == expected
    assert abs(by_hand["l1"] - by_hand["kl"]) > 0.1  # the two losses are told apart on this batch
    np.testing.assert_allclose(metrics["student/loss"], by_hand[expected], rtol=1e-4)
    assert "gen/adv_discrepancy" in metrics  # the generator still plays


def test_finetune_iteration_trains_the_student_alone():
    _, before, after, metrics, by_hand = _one_iteration("kl", adversarial=False)
    assert set(metrics) == {"student/loss"}
    np.testing.assert_allclose(metrics["student/loss"], by_hand["kl"], rtol=1e-4)
    chex.assert_trees_all_equal(after.generator, before.generator)  # params, BN statistics, Adam state
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), after.student.params, before.student.params)
    assert min(jax.tree.leaves(moved)) > 0
    assert int(after.step) == int(before.step) + 1


def test_student_schedule_anneals_again_from_the_finetune_lr():
    config = ddad_config.get_config("fashion_mnist")  # cosine over the adversarial epochs
    adversarial_updates = config.num_epochs * config.iters_per_epoch * config.student_steps_per_generator_step
    config.finetune_epochs, config.finetune_lr = 2, 0.005
    schedule = train.student_schedule(config)
    np.testing.assert_allclose(schedule(0), config.student_lr, rtol=1e-6)
    assert float(schedule(adversarial_updates - 1)) < 1e-6  # the cosine has run out
    finetune_updates = 2 * config.iters_per_epoch * config.student_steps_per_generator_step
    np.testing.assert_allclose(schedule(adversarial_updates), 0.005, rtol=1e-6)  # then a cosine
    np.testing.assert_allclose(schedule(adversarial_updates + finetune_updates // 2), 0.0025, rtol=1e-4)
    assert float(schedule(adversarial_updates + finetune_updates)) < 1e-9
    config.finetune_epochs = 0
    assert float(train.student_schedule(config)(adversarial_updates)) < 1e-6


def _checkpoint(workdir, step):
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(os.path.join(workdir, "checkpoints", str(step), "default"))


def test_run_freezes_the_generator_and_resumes_inside_the_finetune_phase(tmp_path, fmnist_smoke_teacher,
                                                                        fmnist_data_dir):
    def config(finetune_epochs):
        c = ddad_config.get_config("fashion_mnist,smoke")  # 2 iterations an epoch
        c.teacher_dir, c.data_dir, c.num_devices = fmnist_smoke_teacher, fmnist_data_dir, 1
        c.num_epochs, c.finetune_epochs = 1, finetune_epochs
        return c

    straight = str(tmp_path / "straight")
    summary = train.train_and_evaluate(config(2), straight)  # iterations 1-2, then fine-tuning 3-6
    assert summary["iterations"] == 2 and summary["finetune_iterations"] == 4
    assert sorted(os.listdir(os.path.join(straight, "samples")))[-1] == "epoch_0003.png"
    end_of_game, end = _checkpoint(straight, 4), _checkpoint(straight, 6)
    chex.assert_trees_all_equal(end["generator"], end_of_game["generator"])
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), end["student"]["params"],
                         end_of_game["student"]["params"])
    assert max(jax.tree.leaves(moved)) > 0
    # Interrupted after the first fine-tuning epoch (its checkpoint is the latest), then resumed
    # with the same config: the fine-tuning schedule depends on finetune_epochs.
    resumed = str(tmp_path / "resumed")
    shutil.copytree(straight, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))
    train.train_and_evaluate(config(2), resumed)
    chex.assert_trees_all_equal(_checkpoint(resumed, 6), end)


@pytest.mark.parametrize("field, value, match", [
    ("student_discrepancy", "l2", "student_discrepancy must be"),
    ("finetune_discrepancy", "l2", "finetune_discrepancy must be"),
    ("finetune_epochs", -1, "finetune_epochs must be >= 0"),
    ("finetune_lr", 0.0, "finetune_lr > 0"),
])
def test_bad_values_are_clear_errors(field, value, match):
    config = ddad_config.get_config("fashion_mnist,smoke")
    setattr(config, field, value)
    with pytest.raises(UserError, match=match):
        train._validate(config, {"batch_stats": {"bn": {}}})

