"""The optional moving average of the student (``student_ema``): its arithmetic, its update
inside a DDAD iteration, its evaluation, its errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddad as ddad_config
from conftest import tiny_ddad
from ddad_jax import data, parallel, state as state_lib
from ddad_jax.errors import UserError
from ddad_jax.evaluation import EvalSet
from ddad_jax.methods import ddad
from ddad_jax.train import _validate, evaluate_students, hyper_from_config


def test_ema_arithmetic_against_hand_values():
    # warm-up: min(decay, (1 + n) / (10 + n))
    np.testing.assert_allclose(state_lib.ema_decay(0.99, 0.0), 0.1)
    np.testing.assert_allclose(state_lib.ema_decay(0.99, 8.0), 0.5)
    np.testing.assert_allclose(state_lib.ema_decay(0.99, 10_000.0), 0.99)
    average = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(4.0)}
    new = {"w": jnp.array([3.0, 0.0]), "b": jnp.array(0.0)}
    out = state_lib.ema_update(average, new, 0.75)
    chex.assert_trees_all_close(out, {"w": jnp.array([1.5, 1.5]), "b": jnp.array(3.0)})


def _setup(student_ema):
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.batch_size, config.student_ema = 8, student_ema
    mesh, t_model, t_vars, _, student, state = tiny_ddad(config)
    hp = hyper_from_config(config)
    state = ddad.place_state(state, hp, mesh)
    return config, hp, mesh, t_model, parallel.replicate(t_vars, mesh), student, state


def test_iteration_moves_the_average_towards_the_student():
    _, hp, mesh, t_model, t_vars, _, state = _setup(0.9)
    start = jax.device_get(state.student_ema)
    chex.assert_trees_all_equal(start, jax.device_get(state_lib.variables_of(state.student)))
    step = ddad.make_iteration(t_model, hp, mesh)
    rng = jax.random.key(1)
    state, _ = step(state, t_vars, rng)
    first_student = jax.device_get(state_lib.variables_of(state.student))
    d0 = 0.1  # the warm-up weight after 0 iterations
    expected = jax.tree.map(lambda a, n: d0 * a + (1 - d0) * n, start, first_student)
    chex.assert_trees_all_close(jax.device_get(state.student_ema), expected, rtol=1e-6, atol=1e-7)
    previous = jax.device_get(state.student_ema)
    state, _ = step(state, t_vars, rng)
    d1 = 2.0 / 11.0
    expected = jax.tree.map(lambda a, n: d1 * a + (1 - d1) * n, previous,
                            jax.device_get(state_lib.variables_of(state.student)))
    chex.assert_trees_all_close(jax.device_get(state.student_ema), expected, rtol=1e-6, atol=1e-7)
    # the average is not the student itself
    diff = jax.tree.map(lambda a, b: np.abs(a - b).max(), jax.device_get(state.student_ema),
                        jax.device_get(state_lib.variables_of(state.student)))
    assert max(jax.tree.leaves(diff)) > 0


def test_off_by_default_and_no_average_kept():
    assert ddad_config.get_config("fashion_mnist").student_ema == 0.0
    _, hp, _, _, _, _, state = _setup(0.0)
    assert hp.student_ema == 0.0 and state.student_ema is None


def test_evaluation_reports_the_average_and_the_raw_student():
    config, hp, mesh, t_model, t_vars, student, state = _setup(0.9)
    spec = data.get_spec("fashion_mnist")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 28, 28, 1), np.uint8)
    y = rng.integers(0, 10, (32,), np.int32)
    eval_set = EvalSet.build(x, y, spec, 16, mesh)
    # make the average a different network: the student with its final layer zeroed predicts class 0
    params = jax.device_get(state.student.params)
    zeroed = jax.tree.map(np.zeros_like, params)
    state = state.replace(student_ema={"params": zeroed})
    acc, metrics = evaluate_students(student, state, eval_set)
    assert set(metrics) == {"test/student_accuracy", "test/student_raw_accuracy"}
    assert acc == metrics["test/student_accuracy"]
    np.testing.assert_allclose(acc, np.mean(y == 0))
    acc_plain, metrics_plain = evaluate_students(student, state.replace(student_ema=None), eval_set)
    assert set(metrics_plain) == {"test/student_accuracy"}
    assert acc_plain == metrics["test/student_raw_accuracy"]


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_student_ema_outside_zero_one_is_a_clear_error(decay):
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.student_ema = decay
    with pytest.raises(UserError, match="student_ema"):
        _validate(config, {"batch_stats": {"bn": {}}})
