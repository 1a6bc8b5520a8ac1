"""The optional class-conditional generator: its inputs, its cross-entropy term, its errors."""

import dataclasses

import chex
import jax
import numpy as np
import optax
import pytest

from configs import ddad as ddad_config
from conftest import tiny_ddad
from ddad_jax import parallel
from ddad_jax.errors import UserError
from ddad_jax.methods import ddad
from ddad_jax.models.bn_stats import apply_with_bn_stats
from ddad_jax.train import _validate, generator_input_dim, hyper_from_config


def test_latents_unconditional_stream_is_unchanged_and_conditional_appends_one_hot_classes():
    rng = jax.random.key(3)
    plain = ddad.DDADHyper(latent_dim=6)
    np.testing.assert_array_equal(ddad.draw_latents(rng, plain, (4, 5)), jax.random.normal(rng, (4, 5, 6)))
    cond = dataclasses.replace(plain, num_classes=10, class_weight=1.0)
    z = ddad.draw_latents(rng, cond, (2, 500))
    chex.assert_shape(z, (2, 500, 16))
    np.testing.assert_array_equal(z[..., :6], jax.random.normal(rng, (2, 500, 6)))
    one_hot = np.asarray(ddad.conditioning_classes(cond, z))
    assert set(np.unique(one_hot)) == {0.0, 1.0} and np.all(one_hot.sum(-1) == 1)
    assert len(np.unique(one_hot.argmax(-1))) == 10  # every class is asked for


def test_config_turns_the_conditional_generator_on_and_sizes_its_input():
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.class_weight = 0.0
    assert hyper_from_config(config).num_classes == 0 and generator_input_dim(config) == config.latent_dim
    config.class_weight = 0.5
    hp = hyper_from_config(config)
    assert (hp.num_classes, hp.class_weight) == (10, 0.5)
    assert generator_input_dim(config) == config.latent_dim + 10


def test_negative_class_weight_is_a_clear_error():
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.class_weight = -1.0
    with pytest.raises(UserError, match="class_weight"):
        _validate(config, {"batch_stats": {"bn": {}}})


def test_generator_loss_adds_the_teachers_cross_entropy_against_the_wanted_class():
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.batch_size, config.class_weight = 8, 2.0
    hp = hyper_from_config(config)
    mesh, t_model, t_vars, _, _, state = tiny_ddad(config)
    z = ddad.draw_latents(jax.random.key(1), hp, (8,))

    def per_replica(state, z):
        t_apply = lambda x: apply_with_bn_stats(t_model, t_vars, x, axis_name=parallel.BATCH_AXIS)
        _, metrics, (x, t_logits) = ddad.generator_step(hp, t_apply, t_vars, state, z)
        return metrics, t_logits

    fn = parallel.data_parallel(per_replica, mesh, (parallel.REPLICATED, parallel.SHARDED),
                                (parallel.REPLICATED, parallel.SHARDED))
    metrics, t_logits = jax.jit(fn)(state, z)
    wanted = np.asarray(z[:, config.latent_dim:]).argmax(-1)
    ce = optax.softmax_cross_entropy_with_integer_labels(t_logits, wanted).mean()
    np.testing.assert_allclose(metrics["gen/class_ce"], ce, rtol=1e-5)
    np.testing.assert_allclose(metrics["gen/class_accuracy"], np.mean(np.argmax(t_logits, -1) == wanted))
    expected = metrics["gen/bn_loss"] - metrics["gen/adv_discrepancy"] + 2.0 * ce
    np.testing.assert_allclose(metrics["gen/loss"], expected, rtol=1e-5)
