"""ddad_jax.api: any Flax classifier as a teacher (FlaxTeacher), and distill() end to end."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_agreement_counted
from ddad_jax import api
from ddad_jax.errors import UserError
from ddad_jax.models.adapter import FlaxTeacher, wrap_variables
from ddad_jax.models.bn_stats import apply_with_bn_stats


class UserNet(nn.Module):
    """A classifier that is none of the registry's: BN first (its input is the image), a
    field-less ``training`` keyword, no ``dtype``/``bn_axis_name`` fields."""
    classes: int = 3
    with_bn: bool = True

    @nn.compact
    def __call__(self, x, training: bool):
        if self.with_bn:
            x = nn.BatchNorm(use_running_average=not training, name="input_norm")(x)
        x = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
        return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


def _user_teacher(with_bn=True):
    net = UserNet(with_bn=with_bn)
    x = jnp.zeros((1, 8, 8, 2))
    variables = net.init(jax.random.key(0), x, training=False)
    if with_bn:  # non-trivial running statistics
        variables = {"params": variables["params"], "batch_stats": {"input_norm": {
            "mean": jnp.array([0.5, -1.0]), "var": jnp.array([2.0, 0.25])}}}
    return net, variables


def test_flax_teacher_computes_the_users_module_in_inference_mode():
    net, variables = _user_teacher()
    wrapped = FlaxTeacher(net, (("training", False),))
    x = jax.random.normal(jax.random.key(1), (5, 8, 8, 2))
    chex.assert_trees_all_close(wrapped.apply(wrap_variables(variables), x), net.apply(variables, x, training=False),
                                atol=1e-6)
    # the builders' clones work on a module that has none of those fields itself
    chex.assert_trees_all_close(wrapped.clone(bn_axis_name="batch", dtype=jnp.bfloat16).apply(
        wrap_variables(variables), x), net.apply(variables, x, training=False), atol=1e-6)
    with pytest.raises(UserError, match="inference mode"):
        wrapped.apply(wrap_variables(variables), x, train=True)
    with pytest.raises(UserError, match="penultimate"):
        wrapped.clone(penultimate=True).apply(wrap_variables(variables), x)


def test_bn_statistics_are_captured_inside_the_users_module():
    net, variables = _user_teacher()
    wrapped = wrap_variables(variables)
    x = jax.random.normal(jax.random.key(2), (6, 8, 8, 2)) * jnp.array([1.0, 3.0]) + jnp.array([2.0, 0.0])
    _, stats = apply_with_bn_stats(FlaxTeacher(net, (("training", False),)), wrapped, x)
    # the statistics mirror the stored batch_stats, and are the BN input's (= the image's) moments
    assert jax.tree.structure(stats) == jax.tree.structure(wrapped["batch_stats"])
    flat = np.asarray(x).reshape(-1, 2)
    chex.assert_trees_all_close(stats["module"]["input_norm"]["mean"], flat.mean(0), atol=1e-5)
    chex.assert_trees_all_close(stats["module"]["input_norm"]["var"], flat.var(0), rtol=1e-4)


def test_input_spec_and_teacher_checks():
    spec = api.input_spec((8, 8, 2), 3, (0.5, 0.5), (0.25, 0.25))
    assert (spec.image_size, spec.channels, spec.num_classes, spec.mean) == (8, 2, 3, (0.5, 0.5))
    with pytest.raises(UserError, match="input_shape"):
        api.input_spec((8, 6, 2), 3, (0.5, 0.5), (0.25, 0.25))
    with pytest.raises(UserError, match="one value per channel"):
        api.input_spec((8, 8, 2), 3, (0.5,), (0.25,))
    net, variables = _user_teacher()
    model = FlaxTeacher(net, (("training", False),))
    api.check_teacher(model, wrap_variables(variables), spec)
    with pytest.raises(UserError, match=r"expected \(10,\) logits"):
        api.check_teacher(model, wrap_variables(variables), api.input_spec((8, 8, 2), 10, (0, 0), (1, 1)))
    with pytest.raises(UserError, match="does not run on inputs"):
        api.check_teacher(model, wrap_variables(variables), api.input_spec((8, 8, 3), 3, (0,) * 3, (1,) * 3))
    with pytest.raises(UserError, match="'params'"):
        wrap_variables({"weights": {}})


def test_a_teacher_without_batchnorm_needs_adversarial_only(tmp_path):
    net, variables = _user_teacher(with_bn=False)
    with pytest.raises(UserError, match="adversarial_only=True"):
        api.distill(net, variables, workdir=str(tmp_path / "run"), input_shape=(8, 8, 2), num_classes=3,
                    mean=(0.0, 0.0), std=(1.0, 1.0), call_kwargs={"training": False})
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="'teacher_dir' is set by distill"):
        api.distill(net, variables, workdir=str(tmp_path / "run"), input_shape=(8, 8, 2), num_classes=3,
                    mean=(0.0, 0.0), std=(1.0, 1.0), teacher_dir="x")


@pytest.mark.slow
def test_distill_a_user_module_end_to_end(tmp_path):
    """distill() runs DDAD on a module that is none of the registry's, reads no dataset, and
    leaves the same workdir a launched run does (summary with agreement, not accuracy)."""
    from configs import common, ddad
    net = UserNet(classes=10)
    variables = net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), training=False)
    config = common.smoke(ddad.base())
    config.num_epochs = 1  # one epoch: what runs is the point
    summary = api.distill(net, variables, workdir=str(tmp_path / "run"), input_shape=(32, 32, 1), num_classes=10,
                          mean=(0.5,), std=(0.5,), call_kwargs={"training": False}, config=config,
                          student="lenet5_half", num_devices=1, sample_grid=0)
    assert summary["student_acc"] is None
    assert_agreement_counted(summary, tmp_path / "run", images=8 * config.batch_size)
    assert summary["teacher"] == "flax:UserNet"
    assert (tmp_path / "run" / "summary.json").exists()
