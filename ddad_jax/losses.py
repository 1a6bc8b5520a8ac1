"""Small pure loss functions. Each reduces to a scalar mean over the (local) batch."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util


def l1_discrepancy(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray) -> jnp.ndarray:
    """Mean absolute difference between logits (DFAD's discrepancy)."""
    return jnp.mean(jnp.abs(student_logits - teacher_logits))


def kl_discrepancy(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                   temperature: float = 1.0) -> jnp.ndarray:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch (Hinton's KD)."""
    t = jax.nn.log_softmax(teacher_logits / temperature)
    s = jax.nn.log_softmax(student_logits / temperature)
    kl = jnp.sum(jnp.exp(t) * (t - s), axis=-1)
    return temperature**2 * jnp.mean(kl)


def discrepancy(student_logits, teacher_logits, kind: str = "l1", temperature: float = 1.0):
    if kind == "l1":
        return l1_discrepancy(student_logits, teacher_logits)
    if kind == "kl":
        return kl_discrepancy(student_logits, teacher_logits, temperature)
    raise ValueError(f"unknown discrepancy '{kind}' (use 'l1' or 'kl')")


def one_hot_loss(teacher_logits: jnp.ndarray) -> jnp.ndarray:
    """Cross-entropy of the teacher's prediction against its own arg-max (DAFL's L_oh):
    low when each image is a confident example of some class."""
    labels = jnp.argmax(teacher_logits, axis=-1)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(teacher_logits, labels))


def negative_entropy(mean_probs: jnp.ndarray) -> jnp.ndarray:
    """sum_c p_c log p_c of the batch-mean class distribution (DAFL's information-entropy
    loss): minimal (-log C) when the classes are balanced. Pass the global-batch mean."""
    return jnp.sum(mean_probs * jnp.log(jnp.clip(mean_probs, 1e-12)))


def bn_statistics_loss(batch_stats_observed: Any, batch_stats_stored: Any) -> jnp.ndarray:
    """Sum over BatchNorm layers of ||mu - running_mean||_2 + ||var - running_var||_2.

    Both arguments are trees shaped like a model's ``batch_stats`` collection (leaves
    ``mean`` and ``var`` per layer); see ``models.bn_stats.apply_with_bn_stats``.
    """
    observed = traverse_util.flatten_dict(batch_stats_observed)
    stored = traverse_util.flatten_dict(batch_stats_stored)
    if set(observed) != set(stored):
        raise ValueError("observed and stored BatchNorm statistics have different layers: "
                         f"{sorted(set(observed) ^ set(stored))[:4]}")
    if not observed:
        raise ValueError("no BatchNorm statistics to compare: the model has no BatchNorm layers")
    return sum(jnp.linalg.norm(observed[k] - stored[k]) for k in sorted(observed))


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(jnp.argmax(logits, -1) == labels)
