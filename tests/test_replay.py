"""The replay memory: what is stored, where, and what a student update reads back."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddad as ddad_config
from ddad_jax import data, models, parallel, state as state_lib
from ddad_jax.errors import UserError
from ddad_jax.methods import ddad, replay
from ddad_jax.train import _validate, create_state, hyper_from_config


def test_init_is_none_when_off_and_zeros_when_on():
    assert replay.init(0, 8, (4, 4, 1), 10) is None
    memory = replay.init(3, 8, (4, 4, 1), 10)
    chex.assert_shape(memory.images, (3, 8, 4, 4, 1))
    chex.assert_shape(memory.logits, (3, 8, 10))
    assert not np.any(memory.images) and not np.any(memory.logits)


def test_write_fills_one_slot_and_read_takes_each_column_from_its_slot():
    memory = replay.init(3, 4, (2, 2, 1), 5)
    for slot in range(3):
        images = jnp.full((4, 2, 2, 1), slot + 1.0) * jnp.arange(1, 5)[:, None, None, None]
        memory = replay.write(memory, slot, images, jnp.full((4, 5), 10.0 * (slot + 1)))
    slots = jnp.array([2, 0, 1, 2])
    images, logits = replay.read(memory, slots)
    # example j comes from slot slots[j] at position j
    np.testing.assert_allclose(images[:, 0, 0, 0], [(2 + 1) * 1, (0 + 1) * 2, (1 + 1) * 3, (2 + 1) * 4])
    np.testing.assert_allclose(logits[:, 0], [30.0, 10.0, 20.0, 30.0])


def test_draw_slots_stays_within_the_filled_slots():
    slots = replay.draw_slots(jax.random.key(0), jnp.asarray(2), 5, 64)
    chex.assert_shape(slots, (5, 64))
    assert set(np.unique(slots)) == {0, 1}
    assert set(np.unique(replay.draw_slots(jax.random.key(0), jnp.asarray(0), 1, 16))) == {0}


def test_iteration_stores_generated_batches_with_the_teachers_inference_logits():
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.replay_slots = 3
    spec = data.get_spec("fashion_mnist")
    mesh = parallel.make_mesh(2)
    t_model = models.get_classifier("lenet5_bn", 10, bn_axis_name=parallel.BATCH_AXIS)
    t_vars = state_lib.init_variables(t_model, jax.random.key(7), jnp.zeros((1, 32, 32, 1)))
    t_vars = {**t_vars, "batch_stats": jax.tree.map(lambda x: x + 0.5, t_vars["batch_stats"])}
    gen = models.get_generator(config.generator_channels, 32, 1, bn_axis_name=parallel.BATCH_AXIS)
    student = models.get_classifier("lenet5_half", 10, bn_axis_name=parallel.BATCH_AXIS)
    hp = hyper_from_config(config)
    state = ddad.place_state(create_state(config, spec, gen, student, jax.random.key(0)), hp, mesh)
    step = ddad.make_iteration(t_model, hp, mesh)
    state, _ = step(state, parallel.replicate(t_vars, mesh), jax.random.key(1))
    memory = jax.device_get(state.memory)
    assert np.any(memory.images[0]) and not np.any(memory.images[1:])  # slot 0 only
    single = t_model.clone(bn_axis_name=None)
    expected = single.apply(t_vars, memory.images[0], train=False)
    np.testing.assert_allclose(memory.logits[0], expected, rtol=1e-4, atol=1e-4)
    for _ in range(3):  # wraps around: slot 0 is overwritten by the 4th iteration's batch
        before = memory.images[0]
        state, _ = step(state, parallel.replicate(t_vars, mesh), jax.random.key(1))
        memory = jax.device_get(state.memory)
    assert all(np.any(memory.images[s]) for s in range(3))
    assert not np.allclose(memory.images[0], before)


def test_negative_replay_slots_is_a_clear_error():
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.replay_slots = -1
    with pytest.raises(UserError, match="replay_slots"):
        _validate(config, {"batch_stats": {"bn": {}}})
