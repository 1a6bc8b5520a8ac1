"""DDAD+ (configs/ddad_plus.py): each part is on and does what it says, its pool of 8-bit
pixels round-trips, and a resumed run equals an uninterrupted one (pool and BN blend included)."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ddad_plus
from ddad_jax import trainers, checkpoints, data, loop, synthesis


def _config(fmnist_data_dir, teacher_dir, **overrides):
    config = ddad_plus.get_config("fashion_mnist,smoke")
    config.data_dir, config.teacher_dir, config.num_devices = fmnist_data_dir, teacher_dir, 1
    for k, v in overrides.items():
        config[k] = v
    return config


def test_balanced_targets_hold_every_class_equally_often():
    _, targets = synthesis.draw_latents(jax.random.key(0), 4, 10, (6, 128), balanced=True)
    counts = np.stack([np.bincount(np.asarray(t), minlength=10) for t in targets])
    assert counts.min() == 12 and counts.max() == 13 and np.all(counts.sum(1) == 128)
    assert len({tuple(np.asarray(t)) for t in targets}) == 6  # shuffled differently in every batch


def test_pixel_pool_keeps_images_to_half_a_grey_level():
    spec = data.get_spec("fashion_mnist")
    norm = (tuple(spec.mean), tuple(spec.std))
    pool = synthesis.init_pool(2, 4, (3, 3, 1), 10, pixels=True)
    assert pool.images.dtype == jnp.uint8
    levels = jax.random.randint(jax.random.key(0), (4, 3, 3, 1), 0, 256).astype(jnp.float32)
    x = (levels / 255 - spec.mean[0]) / spec.std[0]
    x = x + 0.2 / 255 / spec.std[0]  # off the grid by a fifth of a level: rounds back
    pool = synthesis.add(pool, 0, x, jnp.ones((4, 10)), norm)
    back, logits = synthesis.sample(pool, jnp.zeros(4, jnp.int32), norm)
    np.testing.assert_allclose(back, x, atol=0.5 / 255 / spec.std[0])
    assert float(jnp.max(jnp.abs(back - x))) > 0  # it really was quantised
    np.testing.assert_array_equal(logits, 1.0)


@pytest.mark.slow
def test_every_part_is_on_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path, fmnist_data_dir,
                                                                       fmnist_smoke_teacher):
    # every part on, the BN momentum too (off by default: configs/ddad_plus.py)
    config = _config(fmnist_data_dir, fmnist_smoke_teacher, sample_grid=0, bn_momentum=0.9)
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    loop.train(trainers.build(config), whole)
    interrupted = trainers.build(config)
    interrupted.total_steps = 2  # killed after the first epoch's checkpoint
    loop.train(interrupted, part)
    loop.train(trainers.build(config), part)
    target = trainers.build(config).state  # one build: only its shapes are read
    restore = lambda d: checkpoints.Checkpointer(os.path.join(d, "checkpoints")).restore(target)
    a, b = restore(whole), restore(part)
    assert int(a.step) == int(b.step) == 6
    # the parts are on: a BN blend, the pool of 8-bit pixels with every adversarial batch, the terms
    assert a.pool.images.dtype == np.uint8 and np.any(jax.tree.leaves(a.bn_running)[0] != 0)
    kept = np.asarray(a.pool.images).reshape(a.pool.images.shape[0], -1)
    assert len({row.tobytes() for row in kept}) == len(kept) == 4 and kept.any(axis=1).all()
    with open(os.path.join(whole, "metrics.jsonl")) as f:
        logged = set().union(*(json.loads(line) for line in f))
    assert {"gen/bn", "gen/ce", "gen/adversarial_agree"} <= logged and "gen/adversarial" not in logged
    chex.assert_trees_all_equal(a.pool, b.pool)
    chex.assert_trees_all_close(a.bn_running, b.bn_running, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(a.student.params, b.student.params, rtol=1e-5, atol=1e-6)
