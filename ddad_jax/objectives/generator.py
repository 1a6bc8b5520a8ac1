"""The generator's objective: a weighted sum of named terms, each to be minimised.

Every term is ``fn(s: Synthesis, axis_name, **params) -> scalar``: a value of the *global* batch when
``axis_name`` names the data-parallel axis (``None``: the batch at hand). DDAD's two
discriminators are ``bn`` (the teacher's BatchNorm statistics) and ``adversarial`` (the
student: minus its L1 discrepancy with the teacher, so the generator seeks disagreement).
DAFL's ``onehot``, ``balance`` and ``activation``, ``ce`` toward classes drawn for each image
(DeepInversion, DFQ, CMI, Fast), DeepInversion's image priors ``tv`` and ``l2``, and CMI's and
Fast's ``adversarial_agree`` and CMI's ``contrastive`` are there for the methods that use them (their formulas follow
the reference code; ``docs/reference/datafree_methods.md``).
"""

import math
from typing import Any, Callable, Dict, FrozenSet, Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from ddad_jax.config_fields import Rule
from ddad_jax.errors import UserError
from ddad_jax.objectives import contrastive as contrastive_lib
from ddad_jax.objectives import student as student_objectives


class Synthesis(NamedTuple):
    """What the generator's terms can look at for one (local) batch of synthetic images."""

    teacher_logits: jnp.ndarray
    bn_observed: Any = None  # per BN layer: batch mean/var of its input (models.bn_stats), global
    bn_stored: Any = None  # the teacher's running statistics (its ``batch_stats``)
    student_logits: Optional[jnp.ndarray] = None  # for terms in NEEDS_STUDENT
    targets: Optional[jnp.ndarray] = None  # int classes drawn for each image (terms in NEEDS_TARGETS)
    images: Optional[jnp.ndarray] = None  # the synthetic batch itself (image priors: tv, l2)
    teacher_features: Optional[Any] = None  # the teacher's sown features (models.features), e.g. penultimate
    contrast: Optional[contrastive_lib.Contrast] = None  # CMI's views, memory-bank draw and head


def _mean(x: jnp.ndarray, axis_name) -> jnp.ndarray:
    """Mean over the local batch, then over replicas (equal shards: the global mean)."""
    m = jnp.mean(x, axis=0)
    return jax.lax.pmean(m, axis_name) if axis_name else m


def bn_statistics(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """Sum over the teacher's BatchNorm layers of ``||mu - running_mean||_2 +
    ||var - running_var||_2`` (the statistics are already those of the global batch)."""
    del axis_name
    observed = traverse_util.flatten_dict(s.bn_observed)
    stored = traverse_util.flatten_dict(s.bn_stored)
    if set(observed) != set(stored):
        raise ValueError("observed and stored BatchNorm statistics have different layers: "
                         f"{sorted(set(observed) ^ set(stored))[:4]}")
    if not observed:
        raise ValueError("no BatchNorm statistics to compare: the model has no BatchNorm layers")
    return sum(jnp.linalg.norm(observed[k] - stored[k]) for k in sorted(observed))


def blend_statistics(observed: Any, running: Any, momentum, step=None) -> Any:
    """BN statistics with a momentum across batches (Fast): ``(1 - m) * observed + m *
    running`` per statistic, ``running`` a constant; ``observed`` as is when there is no
    running blend yet, or at ``step`` 0 (the first batch or round has no past to blend). The
    same formula updates the running blend once per batch/round."""
    if running is None:
        return observed
    if step is not None:
        momentum = jnp.where(step > 0, momentum, 0.0)
    return jax.tree.map(lambda o, r: (1 - momentum) * o + momentum * jax.lax.stop_gradient(r), observed, running)


def adversarial(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """Minus the L1 discrepancy between student and teacher logits (DFAD, DDAD)."""
    gap = jnp.mean(jnp.abs(s.student_logits - s.teacher_logits), axis=-1)
    return -_mean(gap, axis_name)


def adversarial_kl(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """Minus ``KL(teacher || student)`` at temperature 1."""
    per_image = jax.vmap(lambda st, te: student_objectives.kl(st[None], te[None]))(
        s.student_logits, s.teacher_logits)
    return -_mean(per_image, axis_name)


def onehot(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """Cross-entropy of the teacher's prediction against its own arg-max (DAFL's L_oh):
    low when each image is a confident example of some class."""
    logits = s.teacher_logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.argmax(logits, -1))
    return _mean(ce, axis_name)


def balance(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """``sum_c p_c log p_c`` of the global batch's mean class distribution (DAFL's
    information entropy, negated): minimal, ``-log C``, when the classes are balanced."""
    p = _mean(jax.nn.softmax(s.teacher_logits.astype(jnp.float32)), axis_name)
    return jnp.sum(p * jnp.log(jnp.clip(p, 1e-12)))


def ce(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """The teacher's cross-entropy against the class drawn for each image."""
    losses = optax.softmax_cross_entropy_with_integer_labels(s.teacher_logits.astype(jnp.float32), s.targets)
    return _mean(losses, axis_name)


def adversarial_agree(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """Minus ``KL(teacher || student)`` at temperature 1, counted only on images where the two
    predict the same class (zero elsewhere, still averaged over the whole batch): CMI's and
    Fast's adversarial term, which seeks disagreement without pushing images across the
    teacher's decision boundary."""
    agree = (jnp.argmax(s.student_logits, -1) == jnp.argmax(s.teacher_logits, -1)).astype(jnp.float32)
    per_image = jax.vmap(lambda st, te: student_objectives.kl(st[None], te[None]))(
        s.student_logits, s.teacher_logits)
    return -_mean(agree * per_image, axis_name)


def adversarial_js(s: Synthesis, axis_name=None, *, temperature: float = 3.0) -> jnp.ndarray:
    """Minus the Jensen-Shannon divergence of student and teacher at ``temperature``, each
    distribution and their mean clipped to [0.01, 0.99] (DeepInversion's competition term as
    its reference code computes it, at its T = 3): ``0.5 KL(M || P_s) + 0.5 KL(M || P_t)``."""
    p = jnp.clip(jax.nn.softmax(s.student_logits.astype(jnp.float32) / temperature), 0.01, 0.99)
    q = jnp.clip(jax.nn.softmax(s.teacher_logits.astype(jnp.float32) / temperature), 0.01, 0.99)
    m = jnp.clip(0.5 * (p + q), 0.01, 0.99)
    kl = lambda a: jnp.sum(m * (jnp.log(m) - jnp.log(a)), axis=-1)
    return -_mean(0.5 * kl(p) + 0.5 * kl(q), axis_name)


def activation(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """Minus the mean absolute value of the teacher's penultimate features (DAFL's L_a):
    real images of a class excite the features the teacher learnt for it."""
    f = s.teacher_features["penultimate"].astype(jnp.float32)
    return -_mean(jnp.mean(jnp.abs(f.reshape(f.shape[0], -1)), axis=-1), axis_name)


def total_variation(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """DeepInversion's image prior (its L1 form): the sum over the horizontal, vertical and
    two diagonal neighbour differences of their mean absolute value."""
    x = s.images.astype(jnp.float32)
    diffs = (x[:, :, :-1] - x[:, :, 1:], x[:, :-1] - x[:, 1:], x[:, 1:, :-1] - x[:, :-1, 1:],
             x[:, :-1, :-1] - x[:, 1:, 1:])
    per_image = sum(jnp.mean(jnp.abs(d), axis=(1, 2, 3)) for d in diffs)
    return _mean(per_image, axis_name)


def l2_prior(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """DeepInversion's L2 image prior, per image: the mean over the batch of each image's
    Euclidean norm."""
    x = s.images.astype(jnp.float32)
    return _mean(jnp.linalg.norm(x.reshape(x.shape[0], -1), axis=-1), axis_name)


def contrastive(s: Synthesis, axis_name=None) -> jnp.ndarray:
    """CMI's instance discrimination (``objectives.contrastive``)."""
    return contrastive_lib.contrastive(s.contrast, axis_name)


GENERATOR_TERMS: Dict[str, Callable[..., jnp.ndarray]] = {
    "bn": bn_statistics, "adversarial": adversarial, "adversarial_kl": adversarial_kl,
    "adversarial_agree": adversarial_agree, "adversarial_js": adversarial_js, "onehot": onehot, "balance": balance, "ce": ce,
    "activation": activation, "tv": total_variation, "l2": l2_prior, "contrastive": contrastive,
}
# A term's parameters: each is a keyword-only argument of its function (the default is there)
# with its range here; a config sets one as {"weight": w, "temperature": 5.0}.
TERM_PARAMETERS: Dict[str, Dict[str, Rule]] = {
    "adversarial_js": {"temperature": Rule(float, 0.0, open_low=True)},
}
NEEDS_STUDENT = frozenset({"adversarial", "adversarial_kl", "adversarial_agree", "adversarial_js"})  # the student's forward runs only for these
NEEDS_TARGETS = frozenset({"ce"})  # classes are drawn (and fed to the generator) only for these
NEEDS_CONTRAST = frozenset({"contrastive"})  # two views, a head and a memory bank: methods/inversion.py only


class Term(NamedTuple):
    """One weighted generator term and the parameters its config gives it (hashable: the
    methods' hyperparameters are static under ``jax.jit``)."""
    name: str
    weight: float
    params: Tuple[Tuple[str, float], ...] = ()


def parse_terms(spec: Mapping[str, Any]) -> Tuple[Term, ...]:
    """A config's ``generator_terms`` -> the terms with a non-zero weight, sorted by name.
    Each entry is a weight, or ``{"weight": w, <parameter>: value, ...}``; ``UserError``
    (naming what exists) for an unknown term or parameter, a negative weight or a parameter
    out of its range."""
    terms = []
    for name in sorted(spec):
        entry = spec[name]
        if name not in GENERATOR_TERMS:
            raise UserError(f"unknown generator term '{name}' (known: {', '.join(GENERATOR_TERMS)})")
        given = dict(entry) if hasattr(entry, "keys") else {"weight": entry}
        weight = given.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise UserError(f"generator_terms.{name} must be a finite weight >= 0, got {weight!r}")
        known = TERM_PARAMETERS.get(name, {})
        for param, value in given.items():
            if param not in known:
                have = ", ".join(["weight", *known])
                raise UserError(f"generator term '{name}' has no parameter '{param}' (it has: {have})")
            known[param].check(f"generator_terms.{name}.{param}", value)
        if weight:
            terms.append(Term(name, float(weight), tuple(sorted((k, float(v)) for k, v in given.items()))))
    return tuple(terms)


def terms_summary(terms: Tuple[Term, ...]) -> Dict[str, Any]:
    """``{name: weight}``, or ``{name: {"weight": w, **params}}`` for a term given parameters
    (what a run's summary.json records)."""
    return {t.name: {"weight": t.weight, **dict(t.params)} if t.params else t.weight for t in terms}


def term_names(terms: Tuple[Term, ...]) -> FrozenSet[str]:
    return frozenset(t.name for t in terms)


def generator_loss(terms: Tuple[Term, ...], s: Synthesis,
                   axis_name=None) -> Tuple[jnp.ndarray, Mapping[str, jnp.ndarray]]:
    """``sum_i w_i * term_i`` over ``terms`` and each term's value."""
    values = {t.name: GENERATOR_TERMS[t.name](s, axis_name, **dict(t.params)) for t in terms}
    return sum(t.weight * values[t.name] for t in terms), values
