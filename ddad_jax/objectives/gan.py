"""HiDFD's objectives (arXiv 2412.13525): a GAN on a few real images, guided by the teacher.

Each is a small pure function on arrays of one (local) batch; the caller ``pmean``s.

* ``hinge_discriminator`` / ``hinge_generator``: the hinge GAN losses.
* ``adc_discriminator`` / ``adc_generator``: ADC-GAN's 2K-way auxiliary classifier, class
  ``k`` real = ``2k`` and fake = ``2k + 1``: the discriminator tells them apart per class,
  the generator makes its class-``k`` images pass for real ones of class ``k``.
* ``feature_integration``: the discriminator's feature head regresses the frozen teacher's
  features of real *and* generated images (``trans``), and of each real image's generated
  counterpart of the same class (``blend``): the critic stays anchored to the teacher's
  representation instead of memorising the few real images.
* ``effective_number_weights`` / ``smooth_counts`` / ``weighted_balance``: category-frequency
  smoothing: per-class weights from how often the teacher recognises each class in
  generated images (counts smoothed across batches), weighting the batch's class-balance
  (negative entropy) term so rarely generated classes are pushed hardest.
* ``feature_alignment``: the student's projected features against the teacher's (MSE).
"""

import jax
import jax.numpy as jnp
import optax


def hinge_discriminator(real_scores: jnp.ndarray, fake_scores: jnp.ndarray) -> jnp.ndarray:
    """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``."""
    return jnp.mean(jax.nn.relu(1.0 - real_scores)) + jnp.mean(jax.nn.relu(1.0 + fake_scores))


def hinge_generator(fake_scores: jnp.ndarray) -> jnp.ndarray:
    return -jnp.mean(fake_scores)


def _ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def adc_discriminator(real_aux: jnp.ndarray, real_labels: jnp.ndarray, fake_aux: jnp.ndarray,
                      fake_labels: jnp.ndarray) -> jnp.ndarray:
    """``CE(aux(real), 2y) + CE(aux(fake), 2y + 1)``, batch means."""
    return jnp.mean(_ce(real_aux, 2 * real_labels)) + jnp.mean(_ce(fake_aux, 2 * fake_labels + 1))


def adc_generator(fake_aux: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """``CE(aux(fake), 2y) - CE(aux(fake), 2y + 1)``: look like a real ``y``, not a fake one."""
    return jnp.mean(_ce(fake_aux, 2 * labels) - _ce(fake_aux, 2 * labels + 1))


def _l2(a, b):
    return jnp.mean(jnp.linalg.norm(a.astype(jnp.float32) - b.astype(jnp.float32), axis=-1))


def feature_integration(d_real: jnp.ndarray, d_fake: jnp.ndarray, t_real: jnp.ndarray,
                        t_fake: jnp.ndarray) -> jnp.ndarray:
    """``trans + blend``: ``|t(real) - d(real)| + |t(fake) - d(fake)|`` (each image's own
    teacher features) + ``|t(real) - d(fake)| + |t(fake) - d(real)|`` (row ``i`` of the real
    and fake batches share a class), mean L2 distances; the teacher's features are constants."""
    t_real, t_fake = jax.lax.stop_gradient(t_real), jax.lax.stop_gradient(t_fake)
    return _l2(t_real, d_real) + _l2(t_fake, d_fake) + _l2(t_real, d_fake) + _l2(t_fake, d_real)


def smooth_counts(counts: jnp.ndarray, batch_counts: jnp.ndarray, momentum: float) -> jnp.ndarray:
    """``max(1, momentum * counts + (1 - momentum) * batch_counts)``: how often the teacher
    has recently recognised each class in generated images."""
    return jnp.maximum(1.0, momentum * counts + (1.0 - momentum) * batch_counts)


def effective_number_weights(counts: jnp.ndarray, beta: float) -> jnp.ndarray:
    """Class-balanced weights ``(1 - beta) / (1 - beta^n_k)`` (Cui et al.'s effective number),
    normalised to sum to the number of classes: rare classes weigh more."""
    w = (1.0 - beta) / (1.0 - jnp.power(beta, counts))
    return w * counts.shape[0] / jnp.sum(w)


def weighted_balance(mean_probs: jnp.ndarray, weights: jnp.ndarray) -> jnp.ndarray:
    """``sum_k w_k p_k log p_k`` of the batch's mean teacher distribution ``p`` (minimised:
    each class's probability mass is pushed up in proportion to its weight)."""
    p = jnp.clip(mean_probs.astype(jnp.float32), 1e-12)
    return jnp.sum(jax.lax.stop_gradient(weights) * p * jnp.log(p))


def feature_alignment(projected: jnp.ndarray, teacher_features: jnp.ndarray) -> jnp.ndarray:
    """Mean squared error between the student's projected and the teacher's features."""
    return jnp.mean(jnp.square(projected.astype(jnp.float32) - jax.lax.stop_gradient(teacher_features)))
