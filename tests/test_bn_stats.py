import chex
import flax.linen as nn
import jax
import pytest
import numpy as np

from ddad_jax import models, parallel
from ddad_jax.models.bn_stats import apply_with_bn_stats


def _bn_inputs_directly(model, variables, x):
    """The input of each BatchNorm layer, from flax's own intermediates capture of the
    layer that feeds it (for LeNet-5 BN: Conv_i feeds BatchNorm_i)."""
    _, state = model.apply(variables, x, capture_intermediates=lambda m, _: isinstance(m, nn.Conv),
                           mutable=["intermediates"])
    inter = state["intermediates"]
    return {f"BatchNorm_{i}": inter[f"Conv_{i}"]["__call__"][0] for i in range(3)}


def test_captured_bn_statistics_equal_direct_computation():
    model = models.get_classifier("lenet5_bn", 10)
    x = jax.random.normal(jax.random.key(0), (32, 32, 32, 1))
    variables = model.init(jax.random.key(1), x)
    logits, stats = apply_with_bn_stats(model, variables, x)
    chex.assert_trees_all_close(logits, model.apply(variables, x))  # inference output unchanged
    assert set(stats) == set(variables["batch_stats"]) == {"BatchNorm_0", "BatchNorm_1", "BatchNorm_2"}
    for name, h in _bn_inputs_directly(model, variables, x).items():
        h = np.asarray(h, np.float64).reshape(-1, h.shape[-1])
        chex.assert_trees_all_close(stats[name]["mean"], h.mean(0), rtol=1e-4, atol=1e-5)
        chex.assert_trees_all_close(stats[name]["var"], h.var(0), rtol=1e-4, atol=1e-5)
        chex.assert_shape(stats[name]["var"], variables["batch_stats"][name]["var"].shape)


def test_captured_statistics_mirror_nested_batch_stats():
    model = models.get_classifier("wrn16_1", 10)
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    variables = jax.eval_shape(model.init, jax.random.key(1), x)  # the tree's structure and shapes: no compute
    _, stats = jax.eval_shape(lambda v: apply_with_bn_stats(model, v, x), variables)
    chex.assert_trees_all_equal_shapes(stats, variables["batch_stats"])


@pytest.mark.slow
def test_statistics_over_a_sharded_batch_are_global():
    assert jax.device_count() == 8
    mesh = parallel.make_mesh()
    model = models.get_classifier("lenet5_bn", 10)
    x = jax.random.normal(jax.random.key(0), (16, 32, 32, 1)) * 3 + 1
    variables = jax.jit(model.init)(jax.random.key(1), x)  # compiled: eager ops dispatch one by one
    _, expected = jax.jit(lambda v, x: apply_with_bn_stats(model, v, x))(variables, x)

    def per_replica(v, xs):
        return apply_with_bn_stats(model, v, xs, axis_name=parallel.BATCH_AXIS)[1]

    got = jax.jit(parallel.data_parallel(per_replica, mesh, (parallel.REPLICATED, parallel.SHARDED),
                                         parallel.REPLICATED))(variables, x)
    chex.assert_trees_all_close(got, expected, rtol=1e-4, atol=1e-5)
