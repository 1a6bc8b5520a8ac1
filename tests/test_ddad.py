"""DDAD's generator step and student step, checked against computations done outside them."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ddad as ddad_config
from conftest import tiny_ddad
from ddad_jax import trainers, objectives, parallel, state as state_lib, synthesis
from ddad_jax.methods import ddad
from ddad_jax.methods.frozen_teacher import Teacher
from ddad_jax.models.bn_stats import apply_with_bn_stats


def _config(**overrides):
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.batch_size, config.student_steps_per_generator_step = 32, 1
    # test_torch_reference's settings (what is checked here does not depend on them): its
    # generator step is the program the generator-update test below compiles, a cache hit in the suite
    config.lr_schedule, config.generator_lr_schedule, config.student_weight_decay = "constant", "constant", 0.05
    config.update(overrides)
    return config


def _measurer(gen, t_model, t_vars, student):
    """``(g_vars, s_vars, z) -> (BN-statistics loss, L1 discrepancy)`` of the generator's
    images for latents ``z``, computed outside ddad.py with single-device models."""
    @jax.jit
    def measure(g_vars, s_vars, z):
        x = gen.clone(bn_axis_name=None).apply(g_vars, z, train=True, mutable=["batch_stats"])[0]
        t_logits, observed = apply_with_bn_stats(t_model.clone(bn_axis_name=None), t_vars, x)
        s_logits = student.clone(bn_axis_name=None).apply(s_vars, x, train=True)
        bn = objectives.GENERATOR_TERMS["bn"](objectives.Synthesis(t_logits, observed, t_vars["batch_stats"]))
        return bn, jnp.mean(jnp.abs(s_logits - t_logits))
    return lambda *args: tuple(float(v) for v in measure(*args))


@pytest.mark.slow
def test_one_generator_update_raises_the_discrepancy_and_lowers_the_bn_loss():
    config = _config()
    mesh, hp, t_model, t_vars, gen, student, state = tiny_ddad(config)
    z, _ = synthesis.draw_latents(jax.random.key(5), hp.latent_dim, 0, (hp.batch_size,))
    teacher_step = parallel.data_parallel(
        lambda st, tv, z: ddad.generator_step(hp, Teacher(t_model, tv), st, z, None)[:2], mesh,
        in_specs=(ddad.state_spec(hp), parallel.REPLICATED, parallel.SHARDED),
        out_specs=(ddad.state_spec(hp), parallel.REPLICATED))
    after, metrics = jax.jit(teacher_step)(trainers.place_ddad_state(state, hp, mesh), t_vars, z)
    s_vars, measure = state_lib.variables_of(state.student), _measurer(gen, t_model, t_vars, student)
    bn0, gap0 = measure(state_lib.variables_of(state.generator), s_vars, z)
    bn1, gap1 = measure(jax.device_get(state_lib.variables_of(after.generator)), s_vars, z)
    np.testing.assert_allclose(metrics["gen/bn"], bn0, rtol=1e-4)  # the step saw what we measure
    np.testing.assert_allclose(metrics["gen/adversarial"], -gap0, rtol=1e-4)
    assert bn1 < bn0 and gap1 > gap0
    chex.assert_trees_all_equal(jax.device_get(after.student), jax.device_get(state.student))


def _one_iteration(adversarial=True, **overrides):
    """One iteration with one student step; returns (states before and after, metrics, the
    student step's L1 and KL recomputed from the same latents outside ddad.py)."""
    config = _config(**overrides)
    mesh, hp, t_model, t_vars, gen, student, state = tiny_ddad(config)
    before = jax.device_get(state)
    rng = jax.random.key(3)
    step = ddad.make_iteration(t_model, hp, mesh, adversarial=adversarial)
    after, metrics = step(trainers.place_ddad_state(state, hp, mesh), parallel.replicate(t_vars, mesh), rng)
    after = jax.device_get(after)
    # the student step's batch: the latents the iteration draws, through the generator as the
    # student step sees it (after the generator step, if there was one)
    _, k_student = jax.random.split(jax.random.fold_in(rng, 0))
    z, _ = synthesis.draw_latents(k_student, hp.latent_dim, hp.num_classes, (1, hp.batch_size))
    x = gen.clone(bn_axis_name=None).apply(state_lib.variables_of(after.generator), z[0], train=True,
                                           mutable=["batch_stats"])[0]
    t = t_model.clone(bn_axis_name=None).apply(t_vars, x, train=False)
    s = student.clone(bn_axis_name=None).apply(state_lib.variables_of(before.student), x, train=True)
    return before, after, jax.device_get(metrics), {"l1": float(objectives.l1(s, t)), "kl": float(objectives.kl(s, t))}


@pytest.mark.slow
def test_student_step_minimises_its_objective_on_fresh_synthetic_images():
    """L1 here; KL through the same ``ddad.student_step``: the finetune test below."""
    before, after, metrics, by_hand = _one_iteration(student_objective="l1")
    assert abs(by_hand["l1"] - by_hand["kl"]) > 0.1  # the two objectives are told apart here
    np.testing.assert_allclose(metrics["student/loss"], by_hand["l1"], rtol=1e-4)
    assert {"gen/loss", "gen/bn", "gen/adversarial"} <= set(metrics)  # the generator played too
    assert int(after.step) == int(before.step) + 1


@pytest.mark.slow
def test_finetune_iteration_trains_the_student_alone():
    before, after, metrics, by_hand = _one_iteration(adversarial=False, student_objective="kl")
    assert set(metrics) == {"student/loss"}
    assert abs(by_hand["l1"] - by_hand["kl"]) > 0.1  # the two objectives are told apart here
    np.testing.assert_allclose(metrics["student/loss"], by_hand["kl"], rtol=1e-4)
    chex.assert_trees_all_equal(after.generator, before.generator)  # params, BN statistics, Adam state
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), after.student.params, before.student.params)
    assert min(jax.tree.leaves(moved)) > 0


@pytest.mark.slow
def test_ce_term_conditions_the_generator_on_drawn_classes():
    config = _config()
    config.generator_terms.update({"ce": 1.0})
    mesh, hp, t_model, t_vars, gen, _, state = tiny_ddad(config)
    assert hp.num_classes == 10  # a 'ce' term draws targets: a class-conditional generator
    assert state.generator.params["Dense_0"]["kernel"].shape[0] == hp.latent_dim + 10
    rng, g_vars = jax.random.key(4), jax.device_get(state_lib.variables_of(state.generator))
    step = ddad.make_iteration(t_model, hp, mesh)
    _, metrics = step(trainers.place_ddad_state(state, hp, mesh), parallel.replicate(t_vars, mesh), rng)
    k_gen, _ = jax.random.split(jax.random.fold_in(rng, 0))
    z, targets = synthesis.draw_latents(k_gen, hp.latent_dim, 10, (hp.batch_size,))
    np.testing.assert_array_equal(z[:, hp.latent_dim:], jax.nn.one_hot(targets, 10))
    x = gen.clone(bn_axis_name=None).apply(g_vars, z, train=True, mutable=["batch_stats"])[0]
    t = t_model.clone(bn_axis_name=None).apply(t_vars, x, train=False)
    expected = float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(t, targets)))
    np.testing.assert_allclose(metrics["gen/ce"], expected, rtol=1e-4)
    loss = sum(t.weight * metrics[f"gen/{t.name}"] for t in hp.generator_terms)
    np.testing.assert_allclose(metrics["gen/loss"], loss, rtol=1e-5)


def test_a_bn_only_generator_skips_the_student_forward():
    config = _config()
    config.generator_terms.adversarial = 0.0
    mesh, hp, t_model, t_vars, _, _, state = tiny_ddad(config)
    assert hp.generator_terms == (objectives.Term("bn", 1.0),)
    lowered = ddad.make_iteration(t_model, hp, mesh).lower(
        trainers.place_ddad_state(state, hp, mesh), parallel.replicate(t_vars, mesh), jax.random.key(0))
    assert "generator_step/student" not in lowered.as_text(debug_info=True)
