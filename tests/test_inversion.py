"""The inner-optimisation methods (DeepInversion, CMI, Fast) and the data-free configs:
each runs end to end, its synthesis does what it says, and a resumed run equals an
uninterrupted one (the pool included)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddad_jax import objectives
from ddad_jax.methods import inversion


def _config(module, fmnist_data_dir, teacher_dir, **overrides):
    config = module.get_config("fashion_mnist,smoke")
    config.data_dir, config.teacher_dir, config.num_devices = fmnist_data_dir, teacher_dir, 1
    for k, v in overrides.items():
        config[k] = v
    return config


def test_bn_momentum_blend_hand_computed():
    observed = {"l": {"mean": jnp.array([1.0]), "var": jnp.array([3.0])}}
    running = {"l": {"mean": jnp.array([0.0]), "var": jnp.array([1.0])}}
    # (1 - 0.9) * observed + 0.9 * running
    out = objectives.blend_statistics(observed, running, 0.9)
    np.testing.assert_allclose(out["l"]["mean"], [0.1], rtol=1e-6)
    np.testing.assert_allclose(out["l"]["var"], [1.2], rtol=1e-6)
    assert objectives.blend_statistics(observed, None, 0.9) is observed


def test_adversarial_js_hand_computed():
    # teacher all but certain of class 0, student of class 1: both clipped to (0.99, 0.01), M = (0.5, 0.5):
    # KL(M || P) = 0.5 ln(0.5 / 0.01) + 0.5 ln(0.5 / 0.99) = 1.614463 for either, so JS = 1.614463
    s = objectives.Synthesis(teacher_logits=jnp.array([[60.0, 0.0]]), student_logits=jnp.array([[0.0, 60.0]]))
    np.testing.assert_allclose(objectives.GENERATOR_TERMS["adversarial_js"](s), -1.614463, rtol=1e-5)
    same = objectives.Synthesis(teacher_logits=jnp.array([[1.0, 0.0]]), student_logits=jnp.array([[1.0, 0.0]]))
    np.testing.assert_allclose(objectives.GENERATOR_TERMS["adversarial_js"](same), 0.0, atol=1e-7)


@pytest.mark.slow
def test_deepinversion_runs_and_its_synthesis_moves_what_it_should(fmnist_data_dir, fmnist_smoke_teacher):
    from configs import deepinversion
    from ddad_jax import trainers
    config = _config(deepinversion, fmnist_data_dir, fmnist_smoke_teacher, synthesis_steps=4, num_epochs=1,
                     iters_per_epoch=3)
    run = trainers.build(config)
    state = run.place(run.state)
    before = jax.device_get(state)
    history = []
    for n in range(1, run.total_steps + 1):
        state, metrics = run.step(n, state)
        history.append(jax.device_get(metrics))
    after = jax.device_get(state)
    assert int(after.step) == 3 and "student/loss" in history[0]
    assert all(np.isfinite(v) for m in history for v in m.values())
    assert {"diversity/class_entropy", "diversity/feature_distance"} <= set(history[-1])  # the collapse alarm's inputs
    # every round's batch is in the pool, different from the last; the student learnt from them
    assert not np.allclose(after.pool.images[0], after.pool.images[1])
    assert not np.allclose(before.student.params["Dense_1"]["kernel"], after.student.params["Dense_1"]["kernel"])


def test_pixel_synthesis_lowers_the_bn_loss_over_its_inner_steps(fmnist_smoke_teacher):
    from ddad_jax import parallel, teacher as teacher_lib
    from ddad_jax.methods.frozen_teacher import Teacher
    t_model, t_vars, _ = teacher_lib.load_teacher(fmnist_smoke_teacher, "lenet5_bn", "fashion_mnist",
                                                  bn_axis_name=parallel.BATCH_AXIS)
    mesh = parallel.make_mesh(1)
    hp = inversion.InversionHyper(synthesizer="pixels", synthesis_steps=30, synthesis_lr=0.1,
                                  generator_terms=(objectives.Term("bn", 1.0),), batch_size=32, augment_views=False)

    def synth(noise):
        teacher = Teacher(t_model, t_vars)
        state = inversion.InversionState(step=jnp.zeros((), jnp.int32), student=None, pool=None)
        draws = inversion.RoundDraws(noise=noise, targets=None, views=None, local_views=None, slots=None,
                                     init_rng=jax.random.key(0))
        x = inversion.synthesize(hp, teacher, state, lambda p: p, noise, draws).images
        first = objectives.GENERATOR_TERMS["bn"](objectives.Synthesis(
            teacher(noise)[0], teacher(noise)[1], t_vars["batch_stats"]))
        last = objectives.GENERATOR_TERMS["bn"](objectives.Synthesis(teacher(x)[0], teacher(x)[1], t_vars["batch_stats"]))
        return first, last

    f = jax.jit(parallel.data_parallel(synth, mesh, in_specs=(parallel.SHARDED,),
                                       out_specs=(parallel.REPLICATED, parallel.REPLICATED)))
    first, last = f(jax.random.normal(jax.random.key(0), (32, 32, 32, 1)))
    assert float(last) < 0.5 * float(first), (first, last)


@pytest.mark.slow
def test_resumed_inversion_run_equals_an_uninterrupted_one(tmp_path, fmnist_data_dir, fmnist_smoke_teacher):
    """Fast (pool, BN momentum, meta-generator and its optimiser all in the state): 4 rounds
    straight, against 2 rounds, a stop, and the same run resumed for the last 2."""
    import os
    from configs import fast
    from ddad_jax import trainers, checkpoints, loop
    config = _config(fast, fmnist_data_dir, fmnist_smoke_teacher, num_epochs=2, iters_per_epoch=2, sample_grid=0)
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    loop.train(trainers.build(config), whole)
    interrupted = trainers.build(config)
    interrupted.total_steps = 2  # as if killed after the first epoch's checkpoint
    loop.train(interrupted, part)
    loop.train(trainers.build(config), part)  # resumes at round 2
    fresh = trainers.build(config).state  # the restore target, and the state before any round
    restore = lambda d: checkpoints.Checkpointer(os.path.join(d, "checkpoints")).restore(fresh)
    a, b = restore(whole), restore(part)
    assert int(a.step) == int(b.step) == 4
    # the meta-learned initialisation took its outer steps and the BN blend runs
    assert not np.allclose(fresh.generator.params["Dense_0"]["kernel"], a.generator.params["Dense_0"]["kernel"])
    assert np.any(jax.tree.leaves(a.bn_running)[0] != 0)
    chex.assert_trees_all_close(a.student.params, b.student.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(a.pool, b.pool, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(a.generator.params, b.generator.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(a.bn_running, b.bn_running, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dafl", "dfad", "dfq"])
def test_generator_methods_are_ddad_shaped_configs(method, fmnist_data_dir, fmnist_smoke_teacher):
    import importlib
    from ddad_jax import trainers
    config = _config(importlib.import_module(f"configs.{method}"), fmnist_data_dir, fmnist_smoke_teacher)
    run = trainers.build(config)
    before = jax.device_get(run.state.generator.params)
    state, metrics = run.step(1, run.place(run.state))
    metrics = jax.device_get(metrics)
    # the generator minimised the method's own weighted terms (a term left out or mis-weighted breaks this)
    weighted = sum(w * metrics[f"gen/{k}"] for k, w in config.generator_terms.items() if w)
    np.testing.assert_allclose(metrics["gen/loss"], weighted, rtol=1e-5, atol=1e-6)
    assert {k for k in metrics if k.startswith("gen/")} == {"gen/loss", *(f"gen/{k}" for k, w in config.generator_terms.items() if w)}
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), jax.device_get(state.generator.params), before)
    assert min(jax.tree.leaves(moved)) > 0 and run.name == method


def test_info_nce_hand_computed():
    from ddad_jax.objectives import contrastive
    eye = jnp.eye(2)
    # two images, no bank: each row's logits (1, 0), positive 1: log(e + 1) - 1
    one = np.log(np.e + 1) - 1
    np.testing.assert_allclose(contrastive.info_nce(eye, eye, 2, jnp.ones(2, bool), 1.0), one, rtol=1e-6)
    # a cached third row/column: rows (1,0,0), (0,1,1), (1,0,0) against positives 1, 1, 0
    local, global_ = jnp.array([[1.0, 0], [0, 1], [1, 0]]), jnp.array([[1.0, 0], [0, 1], [0, 1]])
    current = ((np.log(np.e + 2) - 1) + (np.log(2 * np.e + 1) - 1)) / 2
    cached = np.log(np.e + 2)
    np.testing.assert_allclose(contrastive.info_nce(local, global_, 2, jnp.ones(3, bool), 1.0), current + cached,
                               rtol=1e-6)
    # an unused bank entry is neither a row nor a negative
    np.testing.assert_allclose(contrastive.info_nce(local, global_, 2, jnp.array([True, True, False]), 1.0), one,
                               rtol=1e-6)
    # the temperature divides the logits: at T = 0.5 the no-bank value is log(e^2 + 1) - 2
    np.testing.assert_allclose(contrastive.info_nce(eye, eye, 2, jnp.ones(2, bool), 0.5), np.log(np.e ** 2 + 1) - 2,
                               rtol=1e-6)


def test_memory_bank_is_a_ring_and_an_empty_one_gives_no_negatives():
    from ddad_jax.objectives import contrastive
    bank = contrastive.init_bank(3, 1)
    _, _, valid = contrastive.bank_draw(jax.random.key(0), bank, 4)
    assert not np.any(valid)
    bank = contrastive.bank_add(bank, jnp.array([[1.0], [2.0]]), -jnp.array([[1.0], [2.0]]))
    bank = contrastive.bank_add(bank, jnp.array([[3.0], [4.0]]), -jnp.array([[3.0], [4.0]]))
    np.testing.assert_array_equal(bank.local[:, 0], [4.0, 2.0, 3.0])  # the oldest (1) overwritten
    np.testing.assert_array_equal(bank.global_[:, 0], [-4.0, -2.0, -3.0])
    assert int(bank.count) == 4
    local, global_, valid = contrastive.bank_draw(jax.random.key(1), bank, 50)
    assert np.all(valid) and set(np.asarray(local[:, 0]).tolist()) == {2.0, 3.0, 4.0}
    np.testing.assert_array_equal(local, -global_)  # entries drawn as pairs


def test_resized_crop_of_the_whole_image_is_the_image_and_a_half_crop_magnifies():
    from ddad_jax import augment
    x = jnp.tile(jnp.arange(8.0)[None, None, :, None], (2, 8, 1, 1))  # x[.., i, j] = j
    whole = jnp.array([[0.0, 0, 8, 8]] * 2)
    np.testing.assert_allclose(augment.resized_crop(x, whole), x, atol=1e-6)
    left_half = jnp.array([[0.0, 0, 8, 4]] * 2)  # all rows, columns 0-3, stretched to 8 columns
    out = augment.resized_crop(x, left_half)
    # output column j samples input column (j + 0.5) / 2 - 0.5 (pixel centres), linearly
    np.testing.assert_allclose(out[0, 3, 1:, 0], np.arange(1, 8) / 2 - 0.25, atol=1e-6)
    boxes = augment.draw_boxes(jax.random.key(0), (1000,), 32, 0.25)
    area = boxes[:, 2] * boxes[:, 3] / 32 ** 2
    assert float(area.min()) >= 0.2 and float(area.max()) <= 1.0 + 1e-6
    assert np.all(boxes[:, 0] + boxes[:, 2] <= 32 + 1e-4) and np.all(boxes[:, 1] + boxes[:, 3] <= 32 + 1e-4)


def test_instance_features_average_to_the_bn_batch_means(fmnist_smoke_teacher):
    from flax import traverse_util
    from ddad_jax import teacher as teacher_lib
    from ddad_jax.models.bn_stats import INSTANCE, apply_with_bn_stats, instance_features
    t_model, t_vars, _ = teacher_lib.load_teacher(fmnist_smoke_teacher, "lenet5_bn", "fashion_mnist")
    x = jax.random.normal(jax.random.key(0), (6, 32, 32, 1))
    _, stats, extra = apply_with_bn_stats(t_model, t_vars, x, extra_collections=(INSTANCE,))
    feats = instance_features(extra[INSTANCE])
    means = [v for k, v in sorted(traverse_util.flatten_dict(stats).items()) if k[-1] == "mean"]
    assert feats.shape == (6, sum(m.shape[0] for m in means))
    # the batch mean of per-image spatial means is the batch mean of the BN input
    np.testing.assert_allclose(feats.mean(0), jnp.concatenate(means), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cmi_round_one_device_equals_two(fmnist_data_dir, fmnist_smoke_teacher):
    """The contrastive term gathers the global batch: the same negatives whatever the split."""
    from configs import cmi
    from ddad_jax import trainers

    def rounds(devices):
        run = trainers.build(_config(cmi, fmnist_data_dir, fmnist_smoke_teacher, num_devices=devices,
                                  synthesis_steps=3, num_epochs=1, iters_per_epoch=2))
        state, history = run.place(run.state), []
        for n in (1, 2):
            state, metrics = run.step(n, state)
            history.append(jax.device_get(metrics))
        return jax.device_get(state), history

    (a, hist_a), (b, hist_b) = rounds(1), rounds(2)
    # the contrastive head learnt, every round's global batch is in the bank, the term is logged
    assert int(a.bank.count) == 2 * 16 and np.all(np.any(a.bank.local[:32] != 0, axis=-1))
    assert "synth/contrastive" in hist_a[0] and "student/loss" in hist_a[0]
    assert not np.allclose(a.pool.images[0], a.pool.images[1])
    chex.assert_trees_all_close(hist_a, hist_b, rtol=1e-3, atol=1e-5)
    chex.assert_trees_all_close(a.head.params, b.head.params, rtol=1e-3, atol=1e-5)
    chex.assert_trees_all_close(a.bank, b.bank, rtol=1e-3, atol=1e-4)
    chex.assert_trees_all_close(a.student.params, b.student.params, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("method", ["dafl", "dfad", "dfq", "deepinversion", "cmi", "fast"])
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_every_published_pair_config_is_valid(method, dataset):
    import importlib
    from configs import common
    from ddad_jax import trainers
    module = importlib.import_module(f"configs.{method}")
    for pair in common.PAIRS:  # fields and ranges checked, nothing run
        config = module.get_config(f"{dataset},{pair}")
        trainers.validate(config)
        assert (config.teacher, config.student) == tuple(pair.split("-")) and config.dataset == dataset


@pytest.mark.slow
@pytest.mark.parametrize("method, dataset", [("cmi", "cifar100"), ("fast", "cifar10")])
def test_cifar_protocols_run_on_standin_data(method, dataset, cifar_data_dir, cifar_random_teachers):
    """A method of each shape takes a step of its CIFAR config (smoke sizes, the stand-in data
    in tfds's format, a WRN teacher): a re-initialised generator with the contrastive term on
    CIFAR-100, and the meta-learned generator. The DDAD-shaped methods (DAFL, DFAD, DFQ, DDAD+)
    share DDAD's step, which tests/test_entry_points.py runs on CIFAR; their terms run on
    Fashion-MNIST here and in tests/test_ddad_plus.py."""
    import importlib
    from ddad_jax import trainers
    config = importlib.import_module(f"configs.{method}").get_config(f"{dataset},smoke")
    config.data_dir, config.teacher_dir, config.num_devices = cifar_data_dir, cifar_random_teachers[dataset], 1
    if "synthesis_steps" in config:
        config.synthesis_steps = 1
    config.warmup_rounds = 0  # Fast's warm-up rounds leave the student and its terms out: this step has both
    run = trainers.build(config)
    before = jax.device_get(run.state.student.params)
    state, metrics = run.step(1, run.place(run.state))
    metrics = jax.device_get(metrics)
    # the synthesis minimised the method's weighted terms (CMI's contrastive one included) ...
    weighted = sum(w * metrics[f"synth/{k}"] for k, w in config.generator_terms.items() if w)
    np.testing.assert_allclose(metrics["synth/loss"], weighted, rtol=1e-5, atol=1e-5)
    # ... its batch entered the pool's first slot, and the student learnt from it
    pool = jax.device_get(state.pool)
    assert np.abs(pool.images[0]).max() > 0 and np.abs(pool.logits[0]).max() > 0 and not np.abs(pool.images[1:]).any()
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), jax.device_get(state.student.params), before)
    assert max(jax.tree.leaves(moved)) > 0
