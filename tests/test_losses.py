import chex
import jax.numpy as jnp
import numpy as np
import pytest

from ddad_jax import losses


def test_l1_discrepancy_hand_computed():
    s = jnp.array([[1.0, -2.0], [0.5, 0.0]])
    t = jnp.array([[0.0, 0.0], [0.5, 3.0]])
    # |1| + |-2| + 0 + |-3| = 6 over 4 entries
    chex.assert_trees_all_close(losses.l1_discrepancy(s, t), 1.5)


def test_kl_discrepancy_hand_computed():
    s = jnp.array([[0.0, 0.0]])
    t = jnp.array([[jnp.log(3.0), 0.0]])  # softmax(t) = (3/4, 1/4); softmax(s) = (1/2, 1/2)
    expected = 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5)
    chex.assert_trees_all_close(losses.kl_discrepancy(s, t), expected, rtol=1e-5)
    # with temperature T: T^2 * KL(softmax(t/T) || softmax(s/T)); s = 0 so softmax(s/T) uniform
    p = np.exp(np.log(3.0) / 2) / (np.exp(np.log(3.0) / 2) + 1)
    expected_t2 = 4 * (p * np.log(p / 0.5) + (1 - p) * np.log((1 - p) / 0.5))
    chex.assert_trees_all_close(losses.kl_discrepancy(s, t, 2.0), expected_t2, rtol=1e-5)


def test_kl_is_zero_for_equal_logits_and_dispatch():
    x = jnp.array([[1.0, 2.0, 3.0]])
    chex.assert_trees_all_close(losses.discrepancy(x, x, "kl"), 0.0, atol=1e-7)
    chex.assert_trees_all_close(losses.discrepancy(x, x + 1, "l1"), 1.0)
    with pytest.raises(ValueError, match="unknown discrepancy"):
        losses.discrepancy(x, x, "l2")


def test_bn_statistics_loss_hand_computed():
    observed = {"a": {"mean": jnp.array([3.0, 0.0]), "var": jnp.array([1.0, 1.0])},
                "b": {"BatchNorm_0": {"mean": jnp.array([1.0]), "var": jnp.array([2.0])}}}
    stored = {"a": {"mean": jnp.array([0.0, 4.0]), "var": jnp.array([1.0, 1.0])},
              "b": {"BatchNorm_0": {"mean": jnp.array([1.0]), "var": jnp.array([4.0])}}}
    # layer a: ||(3, -4)|| = 5, var term 0; layer b: mean term 0, ||(-2)|| = 2
    chex.assert_trees_all_close(losses.bn_statistics_loss(observed, stored), 7.0)


def test_bn_statistics_loss_rejects_mismatched_or_empty_layers():
    a = {"x": {"mean": jnp.zeros(1), "var": jnp.ones(1)}}
    with pytest.raises(ValueError, match="different layers"):
        losses.bn_statistics_loss(a, {"y": a["x"]})
    with pytest.raises(ValueError, match="no BatchNorm"):
        losses.bn_statistics_loss({}, {})


def test_cross_entropy_and_accuracy_hand_computed():
    logits = jnp.array([[0.0, 0.0], [2.0, 0.0]])
    labels = jnp.array([0, 1])
    expected = (np.log(2.0) + (np.log(np.exp(2.0) + 1.0) - 0.0)) / 2
    chex.assert_trees_all_close(losses.cross_entropy(logits, labels), expected, rtol=1e-6)
    chex.assert_trees_all_close(losses.accuracy(logits, labels), 0.5)


def test_one_hot_loss_hand_computed():
    # row 1: softmax = (3/4, 1/4), arg-max 0 -> -log 3/4; row 2: arg-max 1 of (0, log 3) -> -log 3/4
    t = jnp.array([[jnp.log(3.0), 0.0], [0.0, jnp.log(3.0)]])
    chex.assert_trees_all_close(losses.one_hot_loss(t), -np.log(0.75), rtol=1e-6)


def test_negative_entropy_hand_computed_and_minimal_when_balanced():
    p = jnp.array([0.5, 0.25, 0.25])
    expected = 0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)
    chex.assert_trees_all_close(losses.negative_entropy(p), expected, rtol=1e-6)
    chex.assert_trees_all_close(losses.negative_entropy(jnp.full((10,), 0.1)), -np.log(10.0), rtol=1e-6)
    chex.assert_trees_all_close(losses.negative_entropy(jnp.array([1.0, 0.0])), 0.0, atol=1e-7)  # no NaN at 0
