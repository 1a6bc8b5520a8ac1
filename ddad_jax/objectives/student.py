"""The student's objectives: how it learns from the teacher on a batch (real or synthetic).

Each objective is ``fn(d: Distill, p: KDParams) -> scalar``, a mean over the local batch (a
data-parallel caller ``pmean``s it: equal shards make that the global mean). ``d`` holds what
the step computed -- logits always; labels on real data; intermediate features, a scratch
teacher's logits or mixup partners for the objectives that need them (``NEEDS_*`` below) --
and ``p`` the objective's hyperparameters. On synthetic images there are no labels: the
objectives that can do without them (``kd``, ``stkd``, ``dtd``) then use the teacher alone.

Sources (the papers' method sections, where read, and their reference code are cited in
``docs/objectives.md``, with what each implementation here had to assume):

* ``l1``, ``kl``: DFAD's/DDAD's logit L1, Hinton's temperature-scaled KL.
* ``kd``: Hinton et al. 2015, ``alpha * T^2 KL + (1 - alpha) * CE(labels)``.
* ``stkd``: similarity transfer (Zhao et al., arXiv 2103.10047): KD on mixup virtual samples,
  the hard term on the mixed labels ``lam * CE(y_i) + (1 - lam) * CE(y_j)``.
* ``ctkd``: collaborative teaching (Zhao et al., arXiv 1907.09643): a scratch teacher's logits
  (L2 hint, gradient-blocked) plus the expert teacher's attention maps, plus CE.
* ``ka``: knowledge adjustment by probability shift (Wen et al., arXiv 1911.07471): where
  the teacher is wrong, its arg-max and the true class swap places in the soft target.
* ``dtd``: dynamic temperature distillation (same paper): a per-sample temperature
  ``tau_x = tau_0 + (mean_batch(w) - w_x) * beta``, ``w_x = (1 - cos(z_s, z_t))^gamma``.
* ``ka_dtd``: both, as that paper recommends.
"""

import dataclasses
from typing import Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from ddad_jax.config_fields import field
from ddad_jax.objectives.supervised import cross_entropy


# ---------------------------------------------------------------------------------------------
# array-level losses (the generator's terms use these too)

def l1(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, temperature: float = 1.0) -> jnp.ndarray:
    """Mean absolute difference between logits (DFAD's and DDAD's discrepancy); no temperature."""
    del temperature
    return jnp.mean(jnp.abs(student_logits - teacher_logits))


def kl_per_example(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, temperature=1.0) -> jnp.ndarray:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` per example; ``temperature`` a scalar or
    one per example, shaped (batch, 1)."""
    t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
    s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
    return jnp.squeeze(jnp.square(temperature) * jnp.sum(jnp.exp(t) * (t - s), axis=-1, keepdims=True), -1)


def kl(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, temperature: float = 1.0) -> jnp.ndarray:
    """Hinton's KD: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch
    (the ``T^2`` keeps gradient sizes comparable across temperatures)."""
    return jnp.mean(kl_per_example(student_logits, teacher_logits, temperature))


def probability_shift(teacher_logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """KA's probability shift, on logits: where the teacher's arg-max ``m`` is not the label
    ``y``, the values at ``m`` and ``y`` swap. A softmax at any temperature commutes with
    the swap, so the soft target's probabilities at ``m`` and ``y`` swap, nothing else moves."""
    m = jnp.argmax(teacher_logits, -1)
    rows = jnp.arange(teacher_logits.shape[0])
    at_m, at_y = teacher_logits[rows, m], teacher_logits[rows, labels]
    return teacher_logits.at[rows, m].set(at_y).at[rows, labels].set(at_m)


def dynamic_temperature(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, base: float, beta: float,
                        gamma: float, minimum: float) -> jnp.ndarray:
    """DTD's per-example temperature, shape (batch, 1), no gradient: ``tau_0 + (mean(w) - w_x)
    * beta`` with the confusion ``w_x = (1 - cos(z_s, z_t))^gamma`` (the FLSW form): examples
    where student and teacher disagree more than the batch's average get a lower (sharper)
    temperature. Clipped below at ``minimum`` (a large ``beta`` could drive it to 0)."""
    s = jax.lax.stop_gradient(student_logits.astype(jnp.float32))
    t = teacher_logits.astype(jnp.float32)
    cos = jnp.sum(s * t, -1) / (jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1) + 1e-8)
    w = jnp.power(jnp.clip(1.0 - cos, 0.0), gamma)
    return jax.lax.stop_gradient(jnp.maximum(base + (jnp.mean(w) - w) * beta, minimum))[:, None]


def attention_map(features: jnp.ndarray) -> jnp.ndarray:
    """Zagoruyko & Komodakis' attention map: the channel mean of squared activations,
    flattened and L2-normalised per example, shape (batch, H * W)."""
    a = jnp.mean(jnp.square(features.astype(jnp.float32)), axis=-1).reshape(features.shape[0], -1)
    return a / (jnp.linalg.norm(a, axis=-1, keepdims=True) + 1e-12)


def attention_loss(student_features: jnp.ndarray, teacher_features: jnp.ndarray) -> jnp.ndarray:
    """Mean squared difference of the two attention maps (same spatial size, any channels)."""
    return jnp.mean(jnp.square(attention_map(student_features) - attention_map(teacher_features)))


# ---------------------------------------------------------------------------------------------
# the student's objectives

class Distill(NamedTuple):
    """What a student objective can look at for one (local) batch."""

    student_logits: jnp.ndarray
    teacher_logits: jnp.ndarray
    labels: Optional[jnp.ndarray] = None  # int classes (real data); None on synthetic images
    student_features: Optional[Dict[str, jnp.ndarray]] = None  # models.features (NEEDS_FEATURES)
    teacher_features: Optional[Dict[str, jnp.ndarray]] = None
    scratch_logits: Optional[jnp.ndarray] = None  # CTKD's scratch teacher (NEEDS_SCRATCH)
    partner_labels: Optional[jnp.ndarray] = None  # mixup (USES_MIXUP): the other image's label
    mix: Optional[jnp.ndarray] = None  # mixup: each image's weight ``lam`` (the partner's is 1 - lam)


@dataclasses.dataclass(frozen=True)
class KDParams:
    """The objectives' hyperparameters (each objective reads the ones it needs); each declared
    once, with its range and config name (``config_fields``)."""

    temperature: float = field(4.0, low=0.0, open_low=True)  # soft targets' temperature (DTD's base tau_0)
    alpha: float = field(0.9, low=0.0, high=1.0, config="kd_alpha")  # the teacher's term; 1 - alpha on the labels
    dtd_beta: float = field(1.0, low=0.0)  # DTD: how far the temperature moves with the confusion
    dtd_gamma: float = field(2.0, low=0.0)  # DTD: the confusion's exponent (FLSW)
    dtd_min_temperature: float = field(1.0, low=0.0, open_low=True)
    attention_weight: float = field(1000.0, low=0.0)  # CTKD: the expert's attention term (beta of attention transfer)
    scratch_weight: float = field(0.03, low=0.0)  # CTKD: the scratch teacher's logit hint (gamma of rocket launching)
    mixup_alpha: float = field(1.0, low=0.0, open_low=True)  # STKD: each pair's weight lam ~ Beta(mixup_alpha, mixup_alpha)


def _hard(d: Distill) -> jnp.ndarray:
    """CE on the labels; on mixed images, on both labels weighted by ``lam``."""
    if d.mix is None:
        return cross_entropy(d.student_logits, d.labels)
    ce = lambda y: optax.softmax_cross_entropy_with_integer_labels(d.student_logits.astype(jnp.float32), y)
    return jnp.mean(d.mix * ce(d.labels) + (1 - d.mix) * ce(d.partner_labels))


def _with_labels(d: Distill, p: KDParams, soft: jnp.ndarray) -> jnp.ndarray:
    return soft if d.labels is None else p.alpha * soft + (1 - p.alpha) * _hard(d)


def l1_objective(d: Distill, p: KDParams) -> jnp.ndarray:
    del p
    return l1(d.student_logits, d.teacher_logits)


def kl_objective(d: Distill, p: KDParams) -> jnp.ndarray:
    """The teacher's soft targets alone, labels ignored (DDAD's fine-tuning)."""
    return kl(d.student_logits, d.teacher_logits, p.temperature)


def scratch(d: Distill, p: KDParams) -> jnp.ndarray:
    """No teacher: cross-entropy on the labels (the student trained from scratch)."""
    del p
    return _hard(d)


def kd(d: Distill, p: KDParams) -> jnp.ndarray:
    """Hinton's KD: ``alpha * T^2 KL(teacher || student) + (1 - alpha) * CE(labels)``."""
    return _with_labels(d, p, kl(d.student_logits, d.teacher_logits, p.temperature))


def stkd(d: Distill, p: KDParams) -> jnp.ndarray:
    """STKD on mixup virtual samples (the caller mixes the images: ``d.mix`` set): the student
    matches the teacher's distribution on each mixed image, whose non-target classes carry
    both sources' similarities, plus CE on the mixed labels."""
    return kd(d, p)


def ka(d: Distill, p: KDParams) -> jnp.ndarray:
    """KD toward the teacher's soft targets corrected by probability shift (needs labels)."""
    return _with_labels(d, p, kl(d.student_logits, probability_shift(d.teacher_logits, d.labels), p.temperature))


def _dtd(d: Distill, p: KDParams, teacher_logits: jnp.ndarray) -> jnp.ndarray:
    tau = dynamic_temperature(d.student_logits, d.teacher_logits, p.temperature, p.dtd_beta, p.dtd_gamma,
                              p.dtd_min_temperature)
    return _with_labels(d, p, jnp.mean(kl_per_example(d.student_logits, teacher_logits, tau)))


def dtd(d: Distill, p: KDParams) -> jnp.ndarray:
    """KD with DTD's per-example temperature (``tau_x^2 * KL`` at ``tau_x``)."""
    return _dtd(d, p, d.teacher_logits)


def ka_dtd(d: Distill, p: KDParams) -> jnp.ndarray:
    """DTD's temperatures on KA's corrected targets (the temperatures from the uncorrected
    logits: the confusion is the student's disagreement with what the teacher said)."""
    return _dtd(d, p, probability_shift(d.teacher_logits, d.labels))


def ctkd(d: Distill, p: KDParams) -> jnp.ndarray:
    """CTKD's student: CE + ``scratch_weight`` * the squared gap to the (gradient-blocked)
    scratch teacher's logits, summed over classes + ``attention_weight`` * the attention
    losses against the expert teacher over every ``attention*`` feature both sow."""
    hint = jnp.mean(jnp.sum(jnp.square(jax.lax.stop_gradient(d.scratch_logits) - d.student_logits), -1))
    names = sorted(k for k in d.student_features if k.startswith("attention"))
    at = sum(attention_loss(d.student_features[k], d.teacher_features[k]) for k in names)
    return _hard(d) + p.scratch_weight * hint + p.attention_weight * at


STUDENT_OBJECTIVES: Dict[str, Callable[[Distill, KDParams], jnp.ndarray]] = {
    "l1": l1_objective, "kl": kl_objective, "scratch": scratch, "kd": kd, "stkd": stkd, "ka": ka,
    "dtd": dtd, "ka_dtd": ka_dtd, "ctkd": ctkd,
}
NEEDS_LABELS = frozenset({"scratch", "ka", "ka_dtd", "ctkd"})  # real data only
NEEDS_FEATURES = frozenset({"ctkd"})  # student and teacher sow their features
NEEDS_SCRATCH = frozenset({"ctkd"})  # a scratch teacher trains alongside
USES_MIXUP = frozenset({"stkd"})  # the step mixes pairs of images first
NO_TEACHER = frozenset({"scratch"})  # the teacher's forward is skipped


def student_objective(name: str) -> Callable[[Distill, KDParams], jnp.ndarray]:
    if name not in STUDENT_OBJECTIVES:
        raise ValueError(f"unknown student objective '{name}' (known: {', '.join(sorted(STUDENT_OBJECTIVES))})")
    return STUDENT_OBJECTIVES[name]
