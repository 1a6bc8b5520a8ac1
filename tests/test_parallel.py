"""One device vs eight fake CPU devices: the same global batch gives the same losses and
parameters, because every statistic and loss is reduced over the global batch."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddad as ddad_config
from conftest import tiny_ddad
from ddad_jax import trainers, data, models, objectives, parallel, state as state_lib, teacher
from ddad_jax.errors import UserError
from ddad_jax.methods import ddad


def _run_ddad(num_devices, iterations=3):
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.batch_size, config.student_steps_per_generator_step = 16, 2
    # every generator term (targets drawn, a class-conditional generator), a pool, and STKD's
    # mixup of synthetic images (partners drawn over the global batch)
    config.generator_terms.update({k: 0.5 for k in objectives.GENERATOR_TERMS if k not in objectives.NEEDS_CONTRAST})
    config.pool_size, config.student_objective, config.temperature = 2, "stkd", 4.0
    mesh, hp, t_model, t_vars, _, _, state = tiny_ddad(config, num_devices)
    state = trainers.place_ddad_state(state, hp, mesh)
    step = ddad.make_iteration(t_model, hp, mesh)
    history = []
    for _ in range(iterations):
        state, metrics = step(state, parallel.replicate(t_vars, mesh), jax.random.key(0))
        history.append(jax.device_get(metrics))
    return jax.device_get(state), history


@pytest.mark.slow
def test_ddad_one_device_equals_eight_devices():
    """Every generator term, a pool and STKD's mixup. Plain DDAD (the BN and adversarial terms,
    the L1 student) is split across devices and processes end to end in test_multihost."""
    assert jax.device_count() == 8
    state1, hist1 = _run_ddad(1)
    state8, hist8 = _run_ddad(8)
    terms = len(objectives.GENERATOR_TERMS) - len(objectives.NEEDS_CONTRAST)
    assert len(hist1[0]) == 1 + terms + 2 + 1  # loss, each term, two diversity measures, the student loss
    chex.assert_trees_all_close(hist1, hist8, rtol=2e-4, atol=1e-5)
    chex.assert_trees_all_close(state1.generator.params, state8.generator.params, rtol=2e-3, atol=2e-5)
    chex.assert_trees_all_close(state1.generator.batch_stats, state8.generator.batch_stats, rtol=1e-3, atol=1e-5)
    chex.assert_trees_all_close(state1.student.params, state8.student.params, rtol=2e-3, atol=2e-5)
    chex.assert_trees_all_close(state1.pool, state8.pool, rtol=1e-3, atol=1e-4)  # one global array, whatever the split
    # and the step really did something
    assert hist1[-1]["gen/bn"] != hist1[0]["gen/bn"]


@pytest.mark.slow
def test_teacher_step_one_device_equals_eight_devices():
    spec = data.get_spec("cifar10")  # exercises augmentation and BN under the batch axis
    model = models.get_classifier("wrn16_1", 10, bn_axis_name=parallel.BATCH_AXIS)
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), np.uint8)
    labels = np.arange(16, dtype=np.int32) % 10
    spec_noaug = dataclasses.replace(spec, augment=False)  # random crops differ per replica
    results = []
    for n in (1, 8):
        mesh = parallel.make_mesh(n)
        tx = state_lib.make_optimizer("sgd", state_lib.make_schedule("constant", 0.1, 1), 0.9, 5e-4)
        st = state_lib.create_state(model.clone(bn_axis_name=None), tx, jax.random.key(0),
                                    jnp.zeros((1, 32, 32, 3)))
        st = parallel.replicate(st.replace(apply_fn=model.apply), mesh)
        step = teacher.make_train_step(model, spec_noaug, mesh)
        for i in range(2):
            st, m = step(st, parallel.shard_batch(images, mesh), parallel.shard_batch(labels, mesh),
                         jax.random.key(i))
        results.append((jax.device_get(st.params), jax.device_get(st.batch_stats), jax.device_get(m)))
    chex.assert_trees_all_close(results[0], results[1], rtol=2e-3, atol=2e-5)


def test_batch_not_divisible_by_devices_is_a_clear_error():
    with pytest.raises(UserError, match="not divisible by the 8 devices"):
        parallel.check_batch_size(12, parallel.make_mesh())
    assert parallel.check_batch_size(16, parallel.make_mesh()) == 2
