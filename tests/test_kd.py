"""KD on real images: the student objectives against hand-computed values, the class-balanced
subset and step-indexed batches, and the KD trainer end to end on real Fashion-MNIST."""

import dataclasses
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddad_jax import trainers, data, parallel
from ddad_jax.errors import UserError
from ddad_jax.methods import kd as kd_method
from ddad_jax.objectives import student as st

LN3 = math.log(3.0)
P = st.KDParams  # defaults: temperature 4, alpha 0.9


# ---------------------------------------------------------------------------------------------
# objectives

def test_probability_shift_swaps_argmax_and_label_only_where_the_teacher_is_wrong():
    t = jnp.array([[1.0, 3.0, 2.0],    # arg-max 1, label 0: wrong -> entries 0 and 1 swap
                   [5.0, 1.0, 0.0],    # arg-max 0, label 0: right -> unchanged
                   [0.5, 2.0, -1.0]])  # arg-max 1, label 2 (the smallest): 1 and 2 swap
    shifted = st.probability_shift(t, jnp.array([0, 0, 2]))
    np.testing.assert_array_equal(shifted, [[3.0, 1.0, 2.0], [5.0, 1.0, 0.0], [0.5, -1.0, 2.0]])
    np.testing.assert_array_equal(np.argmax(shifted, -1), [0, 0, 2])  # the label is now every row's arg-max


def _ka_reference(s, t, y, temperature, alpha):
    """KA written out independently: swap arg-max and label by hand, then
    alpha * T^2 * KL(softmax(shifted/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)."""
    s, t = np.asarray(s, np.float64), np.array(t, np.float64)
    for i, (m, label) in enumerate(zip(t.argmax(-1), y)):
        t[i, m], t[i, label] = t[i, label], t[i, m]
    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(t / temperature), softmax(s / temperature)
    kl = np.sum(p * np.log(p / q), -1)
    ce = -np.log(softmax(s)[np.arange(len(y)), y])
    return np.mean(alpha * temperature ** 2 * kl + (1 - alpha) * ce)


def test_ka_hand_computed():
    # teacher says class 1 (2 ln3), label 0: shifted = (2 ln3, 0, 0); at T=2 softmax(ln3, 0, 0) = (3/5, 1/5, 1/5)
    # against the uniform student (1/3 each): KL = 3/5 ln(9/5) + 2/5 ln(3/5) = 0.148342, times T^2 = 0.593367;
    # CE(uniform, 0) = ln 3 = 1.098612; 0.9 * 0.593367 + 0.1 * 1.098612 = 0.643892
    d = st.Distill(jnp.zeros((1, 3)), jnp.array([[0.0, 2 * LN3, 0.0]]), jnp.array([0]))
    np.testing.assert_allclose(st.ka(d, P(temperature=2.0, alpha=0.9)), 0.643892, atol=1e-6)
    # (the uniform student cannot tell the shifted target from the unshifted one; this one can:)
    # a student equal to the corrected target has no KL left (unshifted it would), only the CE
    d = st.Distill(jnp.array([[2 * LN3, 0.0, 0.0]]), jnp.array([[0.0, 2 * LN3, 0.0]]), jnp.array([0]))
    # CE(softmax(2ln3, 0, 0) = (9/11, 1/11, 1/11), 0) = ln(11/9) = 0.200671; times 0.1
    np.testing.assert_allclose(st.ka(d, P(temperature=2.0, alpha=0.9)), 0.0200671, atol=1e-6)
    # a batch mixing right and wrong teachers against the written-out formula (the teacher's
    # arg-maxes are 3 4 1 2 3 2: rows 0 and 5 right, the others wrong)
    rng = np.random.default_rng(0)
    s, t, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)) * 3, np.array([3, 1, 2, 3, 4, 2])
    assert (t.argmax(-1) == y).sum() == 2
    d = st.Distill(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32), jnp.asarray(y))
    np.testing.assert_allclose(st.ka(d, P(temperature=3.0, alpha=0.7)), _ka_reference(s, t, y, 3.0, 0.7), rtol=1e-5)


def test_dynamic_temperature_hand_computed_clipped_and_without_gradient():
    s, t = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[1.0, 0.0], [1.0, 0.0]])
    # cos = 1, 0 -> w = (1 - cos)^2 = 0, 1, mean 0.5 -> 4 + (0.5 - w) * 2 = 5, 3
    tau = st.dynamic_temperature(s, t, base=4.0, beta=2.0, gamma=2.0, minimum=1.0)
    assert tau.shape == (2, 1)
    np.testing.assert_allclose(tau, [[5.0], [3.0]], atol=1e-6)
    # beta 10: 4 + 0.5 * 10 = 9 and 4 - 0.5 * 10 = -1, clipped to the minimum 1.5
    tau = st.dynamic_temperature(s, t, base=4.0, beta=10.0, gamma=2.0, minimum=1.5)
    np.testing.assert_allclose(tau, [[9.0], [1.5]], atol=1e-6)
    # no gradient, to either input
    f = lambda s, t: jnp.sum(st.dynamic_temperature(s, t, 4.0, 2.0, 2.0, 1.0) * jnp.array([[1.0], [2.0]]))
    gs, gt = jax.grad(f, argnums=(0, 1))(jnp.array([[1.0, 0.5], [0.2, 1.0]]), t)
    np.testing.assert_array_equal(gs, 0.0)
    np.testing.assert_array_equal(gt, 0.0)


def test_kl_per_example_with_per_example_temperatures():
    s, t = jnp.zeros((2, 2)), jnp.array([[LN3, 0.0], [LN3, 0.0]])
    # T = 1: (3/4, 1/4) vs (1/2, 1/2): 3/4 ln(3/2) + 1/4 ln(1/2) = 0.130812
    # T = 2: softmax(ln3/2, 0) = (0.633975, 0.366025), KL 0.036341, times T^2 = 0.145363
    np.testing.assert_allclose(st.kl_per_example(s, t, jnp.array([[1.0], [2.0]])), [0.130812, 0.145363], atol=1e-6)
    np.testing.assert_allclose(st.kl_per_example(s, t, jnp.array([[2.0], [1.0]])), [0.145363, 0.130812], atol=1e-6)
    # and row by row equal to the scalar-temperature value
    rng = np.random.default_rng(1)
    s, t = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32), jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    taus = [1.0, 2.5, 4.0, 7.0]
    per = st.kl_per_example(s, t, jnp.asarray(taus)[:, None])
    for i, tau in enumerate(taus):
        np.testing.assert_allclose(per[i], st.kl_per_example(s[i:i + 1], t[i:i + 1], tau)[0], rtol=1e-6)


def test_dtd_hand_computed_and_equal_to_kd_without_beta():
    s, t = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[1.0, 0.0], [1.0, 0.0]])
    # temperatures 5 and 3 (test above); row 0: student = teacher, KL 0; row 1 at T=3: teacher
    # (p, 1-p), student (1-p, p) with p = sigmoid(1/3) = 0.582570: KL = (2p - 1) ln(p / (1-p))
    # = tanh(1/6) / 3 = 0.055047, times 3^2 = 0.495421; mean over the batch 0.247711 (no labels)
    p = P(temperature=4.0, dtd_beta=2.0, dtd_gamma=2.0, dtd_min_temperature=1.0)
    np.testing.assert_allclose(st.dtd(st.Distill(s, t), p), 0.247711, atol=1e-6)
    rng = np.random.default_rng(2)
    s, t = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32), jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    y = jnp.array([0, 1, 2, 3, 0])
    flat = P(temperature=3.0, alpha=0.6, dtd_beta=0.0)
    for labels in (None, y):
        d = st.Distill(s, t, labels)
        np.testing.assert_allclose(st.dtd(d, flat), st.kd(d, flat), rtol=1e-6)
    # with beta > 0 the temperatures differ per example, so dtd differs from kd
    assert abs(float(st.dtd(st.Distill(s, t), P(temperature=3.0, dtd_beta=3.0))) -
               float(st.kd(st.Distill(s, t), P(temperature=3.0)))) > 1e-3


def test_attention_map_and_loss_hand_computed():
    f = jnp.array([[[[1.0, 1.0], [2.0, 0.0]]]])  # (1, 1, 2, 2): two pixels, two channels
    # channel means of squares: (1 + 1)/2 = 1, (4 + 0)/2 = 2; / ||(1, 2)|| = sqrt 5
    np.testing.assert_allclose(st.attention_map(f), [[1 / math.sqrt(5), 2 / math.sqrt(5)]], atol=1e-6)
    one_channel = jnp.array([[[[1.0], [math.sqrt(2.0)]]]])  # mean squares 1, 2 as well
    np.testing.assert_allclose(st.attention_loss(one_channel, f), 0.0, atol=1e-7)
    # map (1, 0) against (1, 2)/sqrt5: ((1 - 1/sqrt5)^2 + (2/sqrt5)^2) / 2 = (0.305573 + 0.8) / 2
    np.testing.assert_allclose(st.attention_loss(jnp.array([[[[1.0], [0.0]]]]), f), 0.552786, atol=1e-6)


def _ctkd_example():
    feats_t = jnp.array([[[[1.0, 1.0], [2.0, 0.0]]], [[[1.0, 1.0], [2.0, 0.0]]]])  # maps (1, 2)/sqrt5
    feats_s = jnp.array([[[[1.0], [0.0]]], [[[1.0], [math.sqrt(2.0)]]]])  # maps (1, 0) and (1, 2)/sqrt5
    return st.Distill(
        student_logits=jnp.array([[0.0, 0.0], [LN3, 0.0]]), teacher_logits=jnp.zeros((2, 2)),
        labels=jnp.array([0, 0]),
        student_features={"attention1": feats_s, "attention2": feats_t, "penultimate": jnp.ones((2, 3))},
        teacher_features={"attention1": feats_t, "attention2": feats_t, "penultimate": jnp.zeros((2, 3))},
        scratch_logits=jnp.array([[1.0, 0.0], [LN3, 2.0]]))


def test_ctkd_hand_computed_and_no_gradient_into_the_scratch_teacher():
    d = _ctkd_example()
    p = P(scratch_weight=0.1, attention_weight=10.0)
    # CE: (ln 2 + ln(4/3)) / 2 = 0.490415
    # hint: rows' summed squared gaps 1 and 4, mean 2.5, times 0.1 = 0.25
    # attention1: example 0 squared gaps (0.305573, 0.8), example 1 zero: 1.105573 / 4 = 0.276393;
    #   attention2 identical (0); 'penultimate' is no attention map: ignored; times 10 = 2.763932
    np.testing.assert_allclose(st.ctkd(d, p), 0.490415 + 0.25 + 2.763932, atol=1e-5)  # 3.504347
    g_scratch = jax.grad(lambda z: st.ctkd(d._replace(scratch_logits=z), p))(d.scratch_logits)
    np.testing.assert_array_equal(g_scratch, 0.0)
    # the student does get the hint's gradient: d/ds of 0.1 * mean_b sum (z - s)^2 = -0.1 * (z - s) (batch 2)
    # plus CE's (softmax - onehot) / 2
    g = jax.grad(lambda s: st.ctkd(d._replace(student_logits=s), p))(d.student_logits)
    ce_grad = np.array([[0.5 - 1, 0.5], [0.75 - 1, 0.25]]) / 2
    hint_grad = -0.1 * np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(g, ce_grad + hint_grad, atol=1e-6)


def test_mixed_hard_term_and_stkd():
    s = jnp.array([[LN3, 0.0], [0.0, 0.0]])  # probabilities (3/4, 1/4) and (1/2, 1/2)
    d = st.Distill(s, s, labels=jnp.array([0, 0]), partner_labels=jnp.array([1, 1]), mix=jnp.array([0.25, 1.0]))
    # row 0: 0.25 ln(4/3) + 0.75 ln 4 = 1.111641; row 1 (lam 1): ln 2 = 0.693147; mean 0.902394
    np.testing.assert_allclose(st.scratch(d, P()), 0.902394, atol=1e-6)
    # stkd with the teacher equal to the student: no KL, (1 - alpha) times the mixed CE
    np.testing.assert_allclose(st.stkd(d, P(alpha=0.9)), 0.0902394, atol=1e-6)
    # teacher (ln3, 0) vs student (0, 0) on row 1 adds 0.9 * mean(0, 0.145363) at T=2 (KL at T=2 above)
    d2 = d._replace(teacher_logits=jnp.array([[LN3, 0.0], [LN3, 0.0]]))
    np.testing.assert_allclose(st.stkd(d2, P(alpha=0.9, temperature=2.0)), 0.9 * 0.145363 / 2 + 0.0902394, atol=1e-6)


def test_kd_without_and_with_labels():
    s, t = jnp.zeros((1, 2)), jnp.array([[LN3, 0.0]])
    # no labels: T^2 KL alone = 0.145363 at T=2, whatever alpha
    np.testing.assert_allclose(st.kd(st.Distill(s, t), P(temperature=2.0, alpha=0.3)), 0.145363, atol=1e-6)
    # labels: 0.9 * 0.145363 + 0.1 * CE((1/2, 1/2), 1) = 0.130827 + 0.069315
    np.testing.assert_allclose(st.kd(st.Distill(s, t, jnp.array([1])), P(temperature=2.0, alpha=0.9)), 0.200141,
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------
# data: class-balanced subsets and step-indexed batches

def test_balanced_subset_counts_seeds_and_errors():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(4), 10))
    idx = data.balanced_subset(labels, 10, seed=0, num_classes=4)
    # 10 = 4 * 2 + 2: the first two classes get 3, the others 2
    assert len(idx) == 10 and len(set(idx.tolist())) == 10 and idx.min() >= 0 and idx.max() < 40
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=4), [3, 3, 2, 2])
    np.testing.assert_array_equal(idx, data.balanced_subset(labels, 10, seed=0, num_classes=4))
    assert not np.array_equal(idx, data.balanced_subset(labels, 10, seed=1, num_classes=4))
    # exact multiple: 5 each
    np.testing.assert_array_equal(np.bincount(labels[data.balanced_subset(labels, 20, 3, 4)], minlength=4), [5] * 4)
    # all of them
    np.testing.assert_array_equal(data.balanced_subset(labels, 40, 0, 4), np.arange(40))
    small = np.array([0, 0, 0, 1, 1, 1, 2, 3, 3, 3])
    with pytest.raises(UserError, match=r"cannot draw 8 class-balanced examples: class 2 has only 1 \(needs 2\)"):
        data.balanced_subset(small, 8, 0, 4)
    with pytest.raises(UserError, match=r"class 3 has only 0"):  # a class with no example at all
        data.balanced_subset(np.array([0, 1, 2, 0, 1, 2]), 4, 0, 4)


def test_cycled_batch_straddles_passes_and_covers_each_once_per_pass():
    n, b = 10, 3
    steps = [data.cycled_batch(n, b, seed=5, step=k) for k in range(10)]  # 30 positions: 3 passes
    flat = np.concatenate(steps)
    assert all(s.shape == (3,) for s in steps)
    for p in range(3):
        np.testing.assert_array_equal(np.sort(flat[p * n:(p + 1) * n]), np.arange(n))
    # step 3 covers positions 9, 10, 11: the last of pass 0 then the first two of pass 1
    np.testing.assert_array_equal(steps[3], [flat[9], flat[10], flat[11]])
    assert not np.array_equal(flat[:n], flat[n:2 * n])  # each pass its own order
    # deterministic, depends only on (seed, step); another seed, another order
    np.testing.assert_array_equal(data.cycled_batch(n, b, seed=5, step=7), steps[7])
    assert not np.array_equal(np.concatenate([data.cycled_batch(n, b, 6, k) for k in range(4)]), flat[:12])
    # a batch larger than the examples: passes laid end to end still cover each exactly once
    big = data.cycled_batch(4, 10, seed=0, step=0)  # positions 0..9: two whole passes + 2
    np.testing.assert_array_equal(np.sort(big[:4]), np.arange(4))
    np.testing.assert_array_equal(np.sort(big[4:8]), np.arange(4))


# ---------------------------------------------------------------------------------------------
# the KD trainer on real Fashion-MNIST

@pytest.fixture(scope="module")
def cached_splits():
    """Each build reads the 60k-image split; read it once for this module (read-only, so a
    build that wrote into it would fail)."""
    real, cache = data.load_split, {}

    def load(spec, split, data_dir=None, *args, **kwargs):
        key = (spec.name, split, data_dir, args, tuple(sorted(kwargs.items())))
        if key not in cache:
            x, y = real(spec, split, data_dir, *args, **kwargs)
            x.setflags(write=False)
            y.setflags(write=False)
            cache[key] = (x, y)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "load_split", load)
        yield


def _config(data_dir, teacher_dir, **overrides):
    from configs import kd as kd_config
    c = kd_config.get_config("fashion_mnist,smoke")
    c.data_dir, c.teacher_dir, c.num_devices, c.cpu_devices = data_dir, teacher_dir, 1, 1
    for k, v in overrides.items():
        c[k] = v
    return c


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _steps(run, n):
    state, metrics = run.place(run.state), []
    for k in range(1, n + 1):
        state, m = run.step(k, state)
        metrics.append({key: float(v) for key, v in jax.device_get(m).items()})
    return state, metrics


@pytest.mark.slow
def test_ctkd_scratch_teacher_learns(fmnist_data_dir, fmnist_smoke_teacher, cached_splits):
    config = _config(fmnist_data_dir, fmnist_smoke_teacher, student_objective="ctkd", batch_size=64, num_epochs=1,
                     steps_per_epoch=40, optimizer="adam", learning_rate=1e-3, schedule="cosine",
                     eval_examples=512, eval_batch_size=256)
    run = trainers.build(config)
    assert run.total_steps == 40
    before = _host(run.state.scratch.params)  # copied before the step donates the placed state
    state, metrics = _steps(run, 40)
    after = _host(state.scratch.params)
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), before, after))
    assert min(changed) > 0, "every scratch-teacher parameter moves"
    assert metrics[-1]["scratch/loss"] < metrics[0]["scratch/loss"]
    result = run.evaluate(state)
    # observed 0.69 (scratch teacher) and 0.41 (student) on 512 test images after 40 steps of 64; chance 0.1
    assert result["test/scratch_teacher_accuracy"] > 0.45, result
    assert result["test/student_accuracy"] > 0.25, result


def test_few_real_images_are_exactly_the_balanced_subset(fmnist_data_dir, cached_splits, monkeypatch):
    given = []
    real_make_step = kd_method.make_step

    def recording_make_step(*args, **kwargs):
        step = real_make_step(*args, **kwargs)

        def recorded(state, teacher_vars, images, labels, rng):
            given.append((np.asarray(images), np.asarray(labels)))
            return step(state, teacher_vars, images, labels, rng)
        return recorded

    monkeypatch.setattr(kd_method, "make_step", recording_make_step)
    config = _config(fmnist_data_dir, "", student_objective="scratch", train_examples=120, num_epochs=3,
                     steps_per_epoch=-1)
    run = trainers.build(config)
    assert run.steps_per_epoch == 8 and run.total_steps == 24  # ceil(120 / 16) steps per epoch
    _steps(run, run.total_steps)  # 384 images: 3.2 passes
    images = np.concatenate([x for x, _ in given])
    labels = np.concatenate([y for _, y in given])
    assert images.shape == (384, 28, 28, 1)
    keys = [x.tobytes() for x in images]
    label_of = {}
    for key, y in zip(keys, labels):
        assert label_of.setdefault(key, int(y)) == int(y)
    assert len(label_of) == 120
    np.testing.assert_array_equal(np.bincount(list(label_of.values()), minlength=10), [12] * 10)
    for p in range(3):  # each whole pass: every image exactly once
        assert len(set(keys[p * 120:(p + 1) * 120])) == 120


@pytest.mark.parametrize("train_examples, match", [
    (60001, "cannot draw 60001 class-balanced examples: class 0 has only 6000 (needs 6001)"),
    (0, "train_examples must be -1 (all) or > 0, got 0"),
    (-2, "train_examples must be >= -1, got -2"),
])
def test_train_examples_errors_are_one_line(fmnist_data_dir, cached_splits, train_examples, match):
    with pytest.raises(UserError) as err:
        trainers.build(_config(fmnist_data_dir, "", student_objective="scratch", train_examples=train_examples))
    assert str(err.value) == match


def test_train_subset_too_small_class():
    import ml_collections
    labels = np.concatenate([np.full(3 if c == 3 else 5, c) for c in range(10)])  # class 3 has 3 examples
    config = ml_collections.ConfigDict({"train_examples": 40, "seed": 0})
    with pytest.raises(UserError) as err:
        trainers.train_subset(config, data.get_spec("fashion_mnist"), labels)
    assert str(err.value) == "cannot draw 40 class-balanced examples: class 3 has only 3 (needs 4)"
    config.train_examples = -1
    np.testing.assert_array_equal(trainers.train_subset(config, data.get_spec("fashion_mnist"), labels),
                                  np.arange(len(labels)))


@pytest.fixture(scope="module")
def kd_setup(fmnist_data_dir, fmnist_smoke_teacher, cached_splits):
    """One smoke CTKD run built by ``trainers.build`` and stepped twice (so it has a scratch
    teacher, and the teacher's features): what its ``kd.make_step`` was given -- the hyper-
    parameters, teacher, batches, rng -- and its fresh state on the host, for the tests
    that step other objectives or meshes on the same inputs without rebuilding."""
    calls = {"batches": []}
    real_make_step = kd_method.make_step

    def recording_make_step(hp, teacher_model, spec, mesh):
        calls.update(hp=hp, teacher_model=teacher_model, spec=spec)
        step = real_make_step(hp, teacher_model, spec, mesh)

        def recorded(state, teacher_vars, images, labels, rng):
            calls["batches"].append((np.asarray(images), np.asarray(labels)))
            calls.update(teacher_vars=_host(teacher_vars), rng=rng)
            return step(state, teacher_vars, images, labels, rng)
        return recorded

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kd_method, "make_step", recording_make_step)
        run = trainers.build(_config(fmnist_data_dir, fmnist_smoke_teacher, student_objective="ctkd"))
        fresh = _host(run.state)  # before the first step donates the placed state
        _, metrics = _steps(run, 2)
    return types.SimpleNamespace(state=fresh, metrics=metrics, **calls)


def _objective_steps(setup, objective, num_devices=1):
    """``objective``'s KD step, data-parallel over ``num_devices``, on ``kd_setup``'s batches
    from its fresh state (as ``build_kd`` does: no scratch teacher unless the objective has
    one, no teacher for ``scratch``)."""
    hp = dataclasses.replace(setup.hp, student_objective=objective)
    mesh = parallel.make_mesh(num_devices)
    step = kd_method.make_step(hp, setup.teacher_model if hp.uses["teacher"] else None, setup.spec, mesh)
    state = setup.state if hp.uses["scratch"] else setup.state.replace(scratch=None)
    state = parallel.replicate(state, mesh)
    teacher_vars = parallel.replicate(setup.teacher_vars, mesh) if hp.uses["teacher"] else None
    metrics = []
    for images, labels in setup.batches:
        state, m = step(state, teacher_vars, parallel.shard_batch(images, mesh), parallel.shard_batch(labels, mesh),
                        setup.rng)
        metrics.append({key: float(v) for key, v in jax.device_get(m).items()})
    return _host(state), metrics


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["scratch", "kd", "stkd", "ctkd", "ka", "dtd", "ka_dtd"])
def test_every_objective_runs_two_steps(kd_setup, objective):
    assert len(kd_setup.batches) == 2 and kd_setup.batches[0][0].shape == (16, 28, 28, 1)
    state, metrics = _objective_steps(kd_setup, objective)
    assert int(state.step) == 2
    expected = {"student/loss", "student/train_acc"} | ({"scratch/loss"} if objective == "ctkd" else set())
    for m in metrics:
        assert set(m) == expected, m
        assert all(np.isfinite(v) for v in m.values()), m
        assert m["student/loss"] > 0, m
    assert (state.scratch is not None) == (objective == "ctkd")
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.student.params))
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), state.student.params, kd_setup.state.student.params)
    assert max(jax.tree.leaves(moved)) > 0
    if objective == "ctkd":  # the same two steps as the built run's
        for a, b in zip(metrics, kd_setup.metrics):
            np.testing.assert_allclose(a["student/loss"], b["student/loss"], rtol=1e-6)


@pytest.mark.slow
def test_stkd_one_and_two_devices_agree(kd_setup):
    (s1, m1), (s2, m2) = (_objective_steps(kd_setup, "stkd", n) for n in (1, 2))
    for a, b in zip(m1, m2):
        np.testing.assert_allclose(a["student/loss"], b["student/loss"], rtol=1e-5)
    assert m1[0]["student/loss"] != m1[1]["student/loss"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), s1.student.params, s2.student.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), s1.student.batch_stats,
                 s2.student.batch_stats)
