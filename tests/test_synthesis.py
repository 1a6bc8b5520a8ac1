"""Latents (with and without drawn classes) and the pool of past syntheses."""

import chex
import jax
import jax.numpy as jnp
import pytest
import numpy as np

from configs import ddad as ddad_config
from conftest import tiny_ddad
from ddad_jax import trainers, parallel, synthesis
from ddad_jax.methods import ddad


def test_latents_without_classes_are_noise_and_with_classes_append_their_one_hot_code():
    z, targets = synthesis.draw_latents(jax.random.key(0), 4, 0, (3,))
    assert targets is None
    chex.assert_shape(z, (3, 4))
    zc, targets = synthesis.draw_latents(jax.random.key(0), 4, 5, (3,))
    chex.assert_shape(zc, (3, 9))
    np.testing.assert_array_equal(zc[:, :4], z)  # the noise stream does not change
    np.testing.assert_array_equal(zc[:, 4:], np.eye(5)[np.asarray(targets)])
    assert set(np.unique(synthesis.draw_latents(jax.random.key(1), 2, 3, (200,))[1])) == {0, 1, 2}


def test_pool_is_none_when_off_and_zeros_when_on():
    assert synthesis.init_pool(0, 8, (4, 4, 1), 10) is None
    pool = synthesis.init_pool(3, 8, (4, 4, 1), 10)
    chex.assert_shape(pool.images, (3, 8, 4, 4, 1))
    chex.assert_shape(pool.logits, (3, 8, 10))
    assert not np.any(pool.images) and not np.any(pool.logits)


def test_add_overwrites_the_oldest_slot_and_sample_takes_each_column_from_its_slot():
    pool = synthesis.init_pool(3, 4, (2, 2, 1), 5)
    for step in range(4):  # the 4th batch overwrites slot 0
        images = jnp.full((4, 2, 2, 1), step + 1.0) * jnp.arange(1, 5)[:, None, None, None]
        pool = synthesis.add(pool, step, images, jnp.full((4, 5), 10.0 * (step + 1)))
    images, logits = synthesis.sample(pool, jnp.array([2, 0, 1, 2]))
    # example j comes from slot slots[j] at position j; slot 0 holds the 4th batch
    np.testing.assert_allclose(images[:, 0, 0, 0], [3 * 1, 4 * 2, 2 * 3, 3 * 4])
    np.testing.assert_allclose(logits[:, 0], [30.0, 40.0, 20.0, 30.0])


def test_draw_slots_stays_within_the_filled_slots():
    slots = synthesis.draw_slots(jax.random.key(0), jnp.asarray(2), 5, 64)
    chex.assert_shape(slots, (5, 64))
    assert set(np.unique(slots)) == {0, 1}
    assert set(np.unique(synthesis.draw_slots(jax.random.key(0), jnp.asarray(0), 1, 16))) == {0}


@pytest.mark.slow
def test_iteration_pools_synthesised_batches_with_the_teachers_inference_logits():
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.pool_size = 3
    mesh, hp, t_model, t_vars, _, _, state = tiny_ddad(config, num_devices=2)
    state = trainers.place_ddad_state(state, hp, mesh)
    step = ddad.make_iteration(t_model, hp, mesh)
    state, _ = step(state, parallel.replicate(t_vars, mesh), jax.random.key(1))
    pool = jax.device_get(state.pool)
    assert np.any(pool.images[0]) and not np.any(pool.images[1:])  # slot 0 only
    expected = t_model.clone(bn_axis_name=None).apply(t_vars, pool.images[0], train=False)
    np.testing.assert_allclose(pool.logits[0], expected, rtol=1e-4, atol=1e-4)
    for _ in range(3):  # wraps around: slot 0 is overwritten by the 4th iteration's batch
        before = pool.images[0]
        state, _ = step(state, parallel.replicate(t_vars, mesh), jax.random.key(1))
        pool = jax.device_get(state.pool)
    assert all(np.any(pool.images[s]) for s in range(3))
    assert not np.allclose(pool.images[0], before)
