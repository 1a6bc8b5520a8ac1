"""Each generator term and student objective against values computed by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddad_jax import objectives, parallel
from ddad_jax.objectives import generator as terms

LN3 = math.log(3.0)


def test_student_l1_hand_computed():
    s, t = jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.zeros((2, 2))
    np.testing.assert_allclose(objectives.l1(s, t), 2.5)


def test_student_kl_hand_computed_with_temperature():
    s, t = jnp.array([[0.0, 0.0]]), jnp.array([[LN3, 0.0]])
    # softmax(t) = (3/4, 1/4) against (1/2, 1/2): 3/4 ln(3/2) + 1/4 ln(1/2)
    np.testing.assert_allclose(objectives.kl(s, t), 0.130812, atol=1e-6)
    # T = 2: softmax(t/2) = (sqrt3, 1) / (sqrt3 + 1) = (0.633975, 0.366025), KL 0.036341, times T^2 = 4
    np.testing.assert_allclose(objectives.kl(s, t, 2.0), 0.145363, atol=1e-5)
    np.testing.assert_allclose(objectives.kl(t, t, 3.0), 0.0, atol=1e-7)


def test_unknown_student_objective_names_the_known_ones():
    from ddad_jax.objectives import student
    assert objectives.student_objective("kl") is student.kl_objective
    with pytest.raises(ValueError, match="known: ctkd, dtd, ka, ka_dtd, kd, kl, l1, scratch, stkd"):
        objectives.student_objective("l2")


def _synthesis(**kw):
    base = dict(teacher_logits=jnp.array([[LN3, 0.0], [LN3, 0.0]]))
    return objectives.Synthesis(**{**base, **kw})


def test_bn_term_hand_computed():
    observed = {"l": {"mean": jnp.array([1.0, 2.0]), "var": jnp.array([1.0, 1.0])}}
    stored = {"l": {"mean": jnp.array([1.0, 0.0]), "var": jnp.array([2.0, 1.0])}}
    # ||(0, 2)|| + ||(-1, 0)||
    np.testing.assert_allclose(terms.bn_statistics(_synthesis(bn_observed=observed, bn_stored=stored)), 3.0)
    with pytest.raises(ValueError, match="different layers"):
        terms.bn_statistics(_synthesis(bn_observed=observed, bn_stored={"m": stored["l"]}))
    with pytest.raises(ValueError, match="no BatchNorm"):
        terms.bn_statistics(_synthesis(bn_observed={}, bn_stored={}))


def test_adversarial_terms_are_minus_the_discrepancy():
    s = _synthesis(teacher_logits=jnp.zeros((2, 2)), student_logits=jnp.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(terms.adversarial(s), -2.5)
    s = _synthesis(teacher_logits=jnp.array([[LN3, 0.0]]), student_logits=jnp.zeros((1, 2)))
    np.testing.assert_allclose(terms.adversarial_kl(s), -0.130812, atol=1e-6)


def test_dafl_terms_hand_computed():
    # one-hot: every image predicts class 0 with probability 3/4: -ln(3/4)
    np.testing.assert_allclose(terms.onehot(_synthesis()), 0.287682, atol=1e-6)
    # balance: mean of (1/2, 1/2) and (3/4, 1/4) = (5/8, 3/8); 5/8 ln 5/8 + 3/8 ln 3/8
    s = _synthesis(teacher_logits=jnp.array([[0.0, 0.0], [LN3, 0.0]]))
    np.testing.assert_allclose(terms.balance(s), -0.661563, atol=1e-6)
    balanced = _synthesis(teacher_logits=jnp.array([[5.0, 0.0], [0.0, 5.0]]))
    np.testing.assert_allclose(terms.balance(balanced), -math.log(2), atol=1e-6)  # its minimum


def test_ce_toward_drawn_targets_hand_computed():
    s = _synthesis(targets=jnp.array([0, 1]))
    np.testing.assert_allclose(terms.ce(s), (-math.log(0.75) - math.log(0.25)) / 2, atol=1e-6)


def test_generator_loss_weights_the_named_terms():
    observed = {"l": {"mean": jnp.array([1.0, 2.0]), "var": jnp.array([1.0, 1.0])}}
    stored = {"l": {"mean": jnp.array([1.0, 0.0]), "var": jnp.array([2.0, 1.0])}}
    s = _synthesis(teacher_logits=jnp.zeros((2, 2)), student_logits=jnp.array([[1.0, 2.0], [3.0, 4.0]]),
                   bn_observed=observed, bn_stored=stored)
    loss, values = objectives.generator_loss((objectives.Term("bn", 2.0), objectives.Term("adversarial", 1.0)), s)
    np.testing.assert_allclose(loss, 2.0 * 3.0 - 2.5)
    assert set(values) == {"bn", "adversarial"}


@pytest.mark.parametrize("name", ["adversarial", "adversarial_kl", "onehot", "balance", "ce"])
def test_terms_over_a_sharded_batch_are_those_of_the_global_batch(name):
    rng = np.random.default_rng(0)
    s = objectives.Synthesis(teacher_logits=jnp.asarray(rng.normal(size=(16, 10)), jnp.float32),
                             student_logits=jnp.asarray(rng.normal(size=(16, 10)), jnp.float32),
                             targets=jnp.asarray(rng.integers(0, 10, 16)))
    whole = terms.GENERATOR_TERMS[name](s)
    mesh = parallel.make_mesh(8)
    spec = objectives.Synthesis(teacher_logits=parallel.SHARDED, student_logits=parallel.SHARDED,
                                targets=parallel.SHARDED)
    sharded = jax.jit(parallel.data_parallel(lambda x: terms.GENERATOR_TERMS[name](x, parallel.BATCH_AXIS),
                                             mesh, in_specs=(spec,), out_specs=parallel.REPLICATED))(s)
    np.testing.assert_allclose(sharded, whole, rtol=1e-5)


def test_masked_adversarial_counts_only_images_where_teacher_and_student_agree():
    # image 0: both predict class 0 (a tie goes to the first class), KL(teacher (3/4, 1/4) ||
    # uniform) = 0.130812 (the kl test's value); image 1: teacher class 0, student class 1: masked
    # out, but still in the batch mean
    s = _synthesis(teacher_logits=jnp.array([[LN3, 0.0], [LN3, 0.0]]),
                   student_logits=jnp.array([[0.0, 0.0], [0.0, 5.0]]))
    np.testing.assert_allclose(terms.adversarial_agree(s), -0.130812 / 2, atol=1e-6)


def test_activation_and_image_priors_hand_computed():
    feats = {"penultimate": jnp.array([[1.0, -3.0], [0.0, 2.0]])}  # mean |f| per image: 2 and 1
    np.testing.assert_allclose(terms.activation(_synthesis(teacher_features=feats)), -1.5)
    # one 2x2 single-channel image [[0, 1], [2, 3]]: horizontal diffs -1, -1 (mean 1); vertical
    # -2, -2 (mean 2); diagonal x[1,0] - x[0,1] = 1 (1); x[0,0] - x[1,1] = -3 (3): sum 7
    img = jnp.array([[0.0, 1.0], [2.0, 3.0]])[None, :, :, None]
    np.testing.assert_allclose(terms.total_variation(_synthesis(images=img)), 7.0)
    # L2 prior: norms 5 ([3, 4]) and 0, mean 2.5
    imgs = jnp.array([[3.0, 4.0], [0.0, 0.0]])[:, :, None, None]
    np.testing.assert_allclose(terms.l2_prior(_synthesis(images=imgs)), 2.5)


def test_adversarial_js_takes_its_temperature():
    # teacher (2 ln3, 0) at T = 2 is (3/4, 1/4), student (0, 0) is (1/2, 1/2), nothing clipped; M = (5/8, 3/8):
    # KL(M || P_s) = 5/8 ln(5/4) + 3/8 ln(3/4) = 0.031584, KL(M || P_t) = 5/8 ln(5/6) + 3/8 ln(3/2) = 0.038098,
    # JS = (0.031584 + 0.038098) / 2 = 0.034841
    s = objectives.Synthesis(teacher_logits=jnp.array([[2 * LN3, 0.0]]), student_logits=jnp.zeros((1, 2)))
    np.testing.assert_allclose(terms.adversarial_js(s, temperature=2.0), -0.034841, atol=1e-6)
    # through the weighted sum, the parameter as a config gives it
    parsed = objectives.parse_terms({"adversarial_js": {"weight": 2.0, "temperature": 2.0}})
    assert parsed == (objectives.Term("adversarial_js", 2.0, (("temperature", 2.0),)),)
    loss, values = objectives.generator_loss(parsed, s)
    np.testing.assert_allclose(values["adversarial_js"], -0.034841, atol=1e-6)
    np.testing.assert_allclose(loss, -0.069682, atol=2e-6)
    # the default (T = 3) is a different value: the parameter reached the function
    assert abs(float(objectives.generator_loss(objectives.parse_terms({"adversarial_js": 2.0}), s)[0]) + 0.069682) > 1e-3


def test_parse_terms_reads_weights_and_parameters():
    parsed = objectives.parse_terms({"bn": 1, "ce": 0.0, "adversarial_js": {"temperature": 5.0}})
    # sorted by name, zero weights dropped, a term given as a mapping weighs 1 unless it says otherwise
    assert parsed == (objectives.Term("adversarial_js", 1.0, (("temperature", 5.0),)), objectives.Term("bn", 1.0))
    assert objectives.terms_summary(parsed) == {"adversarial_js": {"weight": 1.0, "temperature": 5.0}, "bn": 1.0}


@pytest.mark.parametrize("spec, match", [
    ({"entropy": 1.0}, r"unknown generator term 'entropy' \(known: bn, adversarial"),
    ({"bn": -1.0}, "generator_terms.bn must be a finite weight >= 0, got -1.0"),
    ({"bn": float("nan")}, "generator_terms.bn must be a finite weight"),
    ({"adversarial_js": {"weight": 1.0, "temp": 3.0}}, r"'adversarial_js' has no parameter 'temp' \(it has: weight, temperature\)"),
    ({"bn": {"weight": 1.0, "temperature": 3.0}}, r"'bn' has no parameter 'temperature' \(it has: weight\)"),
    ({"adversarial_js": {"temperature": 0.0}}, r"generator_terms.adversarial_js.temperature must be > 0.0, got 0.0"),
])
def test_parse_terms_refuses_what_does_not_exist(spec, match):
    from ddad_jax.errors import UserError
    with pytest.raises(UserError, match=match):
        objectives.parse_terms(spec)
