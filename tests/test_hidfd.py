"""HiDFD: its objectives against hand-computed values, category-frequency smoothing on a
deliberately skewed generator, and a run that never sees more real images than configured."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddad_jax.errors import UserError
from ddad_jax.objectives import gan


def test_hinge_losses_hand_computed():
    # real: relu(1 - 2) = 0, relu(1 - 0.5) = 0.5 -> 0.25; fake: relu(1 - 2) = 0, relu(1 + 0) = 1 -> 0.5
    np.testing.assert_allclose(gan.hinge_discriminator(jnp.array([2.0, 0.5]), jnp.array([-2.0, 0.0])), 0.75)
    np.testing.assert_allclose(gan.hinge_generator(jnp.array([1.0, 3.0])), -2.0)


def test_adc_terms_hand_computed():
    aux = jnp.array([[2.0, 0.0, 0.0, 0.0]])  # K = 2 classes -> 4 outputs; label 0: real 0, fake 1
    label = jnp.array([0])
    lse = np.log(np.exp(2.0) + 3.0)  # log-sum-exp of the row
    # generator: CE(target 0) - CE(target 1) = (lse - 2) - (lse - 0) = -2
    np.testing.assert_allclose(gan.adc_generator(aux, label), -2.0, rtol=1e-6)
    # discriminator: real row with target 0 (lse - 2) + fake row (all zeros) with target 1 (log 4)
    np.testing.assert_allclose(gan.adc_discriminator(aux, label, jnp.zeros((1, 4)), label),
                               lse - 2.0 + np.log(4.0), rtol=1e-6)


def test_feature_integration_hand_computed_and_teacher_is_constant():
    d_real, d_fake = jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0]])
    t_real, t_fake = jnp.zeros((1, 2)), jnp.zeros((1, 2))
    # |t_r - d_r| = 0, |t_f - d_f| = 5, |t_r - d_f| = 5, |t_f - d_r| = 0
    np.testing.assert_allclose(gan.feature_integration(d_real, d_fake, t_real, t_fake), 10.0)
    g = jax.grad(lambda t: gan.feature_integration(d_real, d_fake, t, t_fake))(t_real + 1.0)
    np.testing.assert_array_equal(g, 0.0)


def test_category_frequency_smoothing_hand_computed():
    # max(1, 0.5 * [4, 0.5] + 0.5 * [2, 0]) = max(1, [3, 0.25]) = [3, 1]
    np.testing.assert_allclose(gan.smooth_counts(jnp.array([4.0, 0.5]), jnp.array([2.0, 0.0]), 0.5), [3.0, 1.0])
    # beta 0.5: n = 1 -> 0.5 / 0.5 = 1; n = 2 -> 0.5 / 0.75 = 2/3; scaled to sum 2: [1.2, 0.8]
    np.testing.assert_allclose(gan.effective_number_weights(jnp.array([1.0, 2.0]), 0.5), [1.2, 0.8], rtol=1e-6)
    # 2 * 0.5 * log 0.5 with unit weights
    np.testing.assert_allclose(gan.weighted_balance(jnp.array([0.5, 0.5]), jnp.ones(2)), np.log(0.5), rtol=1e-6)
    np.testing.assert_allclose(gan.feature_alignment(jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 1.0]])), 2.5)


def test_class_smoothing_balances_a_skewed_generator():
    """A toy 'generator' whose teacher logits favour class 0 for ~90 % of its images; minimising
    the frequency-weighted balance term with smoothed counts spreads them over the classes."""
    k, d, n = 4, 8, 512
    x = jax.random.normal(jax.random.key(0), (n, d))
    params = {"w": 0.3 * jax.random.normal(jax.random.key(1), (d, k)), "b": jnp.array([3.0, 0.0, 0.0, 0.0])}
    logits = lambda p: x @ p["w"] + p["b"]
    histogram = lambda p: np.bincount(np.asarray(jnp.argmax(logits(p), -1)), minlength=k) / n
    assert histogram(params)[0] > 0.8  # deliberately skewed
    counts = jnp.ones(k)
    step = jax.jit(jax.grad(lambda p, w: gan.weighted_balance(jnp.mean(jax.nn.softmax(logits(p)), 0), w)))
    for _ in range(300):
        counts = gan.smooth_counts(counts, jnp.bincount(jnp.argmax(logits(params), -1), length=k), 0.5)
        weights = gan.effective_number_weights(counts, 0.99)
        params = jax.tree.map(lambda p, g: p - 1.0 * g, params, step(params, weights))
    assert histogram(params).max() < 0.35, histogram(params)
    assert histogram(params).min() > 0.15, histogram(params)


def test_frequent_classes_weigh_least():
    w = gan.effective_number_weights(jnp.array([500.0, 20.0, 5.0]), 0.99)
    assert w[0] < w[1] < w[2]


def _smoke_config(fmnist_data_dir, teacher_dir, **overrides):
    from configs import hidfd as hidfd_config
    config = hidfd_config.get_config("fashion_mnist,smoke")
    config.data_dir, config.teacher_dir, config.num_devices = fmnist_data_dir, teacher_dir, 1
    config.eval_examples = 64
    for k, v in overrides.items():
        config[k] = v
    return config


@pytest.mark.slow
def test_hidfd_trains_every_part_and_never_reads_more_real_images_than_configured(
        fmnist_data_dir, fmnist_smoke_teacher, monkeypatch):
    from ddad_jax import trainers, parallel
    seen = {}  # image digest -> label, over every batch handed to a step
    real_shard = parallel.shard_batch

    def recording(x, mesh):
        x_host = np.asarray(x)
        if x_host.dtype == np.uint8 and x_host.ndim == 4:
            recording.images = x_host
            for img in x_host:
                seen.setdefault(hashlib.sha1(img.tobytes()).hexdigest(), None)
        elif x_host.ndim == 1:  # a GAN batch's labels, right after its images
            for img, label in zip(recording.images, x_host):
                seen[hashlib.sha1(img.tobytes()).hexdigest()] = int(label)
        return real_shard(x, mesh)

    monkeypatch.setattr(parallel, "shard_batch", recording)
    config = _smoke_config(fmnist_data_dir, fmnist_smoke_teacher, train_examples=20, gan_iterations=6,
                           student_iterations=6, batch_size=8)
    run = trainers.build(config)
    state = run.place(run.state)
    before = jax.device_get(state)
    metrics = {}
    for n in range(1, run.total_steps + 1):
        state, metrics[n] = run.step(n, state)
    after = jax.device_get(state)
    # several passes over the 20 class-balanced images, never another one
    assert len(seen) == 20
    labels = [v for v in seen.values() if v is not None]
    assert len(labels) == 20 and np.bincount(labels, minlength=10).tolist() == [2] * 10
    assert not np.allclose(before.class_counts, after.class_counts)  # counts follow the teacher's classes
    for part in ("generator", "discriminator", "student", "projector"):
        moved = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), getattr(before, part).params,
                                             getattr(after, part).params))
        assert any(moved), part
    assert set(metrics[1]) >= {"disc/feature_integration", "gen/balance", "gen/teacher_agreement"}
    assert set(metrics[run.total_steps]) == {"student/feature_alignment"}
    assert all(np.isfinite(float(v)) for m in metrics.values() for v in m.values())


def test_hidfd_bad_input_is_one_line(fmnist_data_dir, fmnist_smoke_teacher):
    from ddad_jax import trainers
    with pytest.raises(UserError, match="class-balanced"):
        trainers.build(_smoke_config(fmnist_data_dir, fmnist_smoke_teacher, train_examples=70000))
    with pytest.raises(UserError, match="count_momentum"):
        trainers.build(_smoke_config(fmnist_data_dir, fmnist_smoke_teacher, count_momentum=1.5))
