"""How varied a batch of synthetic images is, through the teacher's eyes: a collapse alarm.

A generator that collapses produces images of few classes, or many near-copies of a few
images. Two measures, each in [0, 1]-ish and cheap, logged with the losses:

* ``class_entropy``: the entropy of the histogram of the teacher's predicted classes over
  the global batch, divided by ``log K``: 1 when every class is predicted equally often,
  0 when every image gets the same class.
* ``feature_distance``: the mean pairwise Euclidean distance between the teacher's
  L2-normalised penultimate features of the batch's images: 0 for identical images, about
  ``sqrt(2)`` for unrelated ones.

``collapse_warning`` turns them into a line for the log. ``stuck_student_warning`` is the
alarm on the other side: a student whose test accuracy no longer moves, far below the
teacher's, predicts one class for everything (its accuracy is then that class's share).
"""

from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from ddad_jax import parallel

# Below this normalised class entropy the batch effectively covers fewer than about a third of
# the classes (10 classes: e^(0.5 ln 10) ~ 3.2 equally likely classes).
COLLAPSE_ENTROPY = 0.5
# Below this mean feature distance (of about sqrt(2) for unrelated images) the images are near-copies.
COLLAPSE_DISTANCE = 0.1
# A student accuracy equal at this many evaluations in a row, and under a fifth of the teacher's,
# is a dead student (a live one moves by at least one test image between evaluations).
STUCK_EVALUATIONS = 3


def class_entropy(teacher_logits: jnp.ndarray, axis_name=None) -> jnp.ndarray:
    """Normalised entropy of the teacher's predicted-class histogram over the global batch."""
    k = teacher_logits.shape[-1]
    counts = jnp.bincount(jnp.argmax(teacher_logits, -1), length=k).astype(jnp.float32)
    if axis_name:
        counts = jax.lax.psum(counts, axis_name)
    p = counts / jnp.sum(counts)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)) / jnp.log(k)


def feature_distance(features: jnp.ndarray, axis_name=None) -> jnp.ndarray:
    """Mean pairwise distance of L2-normalised feature vectors (batch, d) over all pairs of the
    global batch (gathered across replicas: the same value whatever the device count)."""
    f = features.reshape(features.shape[0], -1).astype(jnp.float32)
    if axis_name:
        f = parallel.gather_replicated(f, axis_name)
    f = f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + 1e-12)
    # |a - b|^2 through the Gram matrix of the features centred on their mean (the distances
    # are unchanged): uncentred, 2 - 2 a.b cancels catastrophically for near-copies -- the very
    # case this measure is for -- and the float32 result then depended on the summation order
    c = f - jnp.mean(f, axis=0, keepdims=True)
    norms = jnp.sum(c * c, axis=-1)
    sq = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * c @ c.T, 0.0)
    n = f.shape[0]
    # the pair count as a float: an int beyond int32 (n > 46341) cannot enter a jitted program
    return jnp.sum(jnp.sqrt(sq + 1e-12) * (1.0 - jnp.eye(n))) / float(max(n * (n - 1), 1))


def collapse_warning(metrics: Mapping[str, float]) -> Optional[str]:
    """A one-line warning when logged diversity metrics say the generator has collapsed."""
    entropy, distance = metrics.get("diversity/class_entropy"), metrics.get("diversity/feature_distance")
    problems = []
    if entropy is not None and entropy < COLLAPSE_ENTROPY:
        problems.append(f"the teacher sees few classes in its images (class entropy {entropy:.2f} < "
                        f"{COLLAPSE_ENTROPY})")
    if distance is not None and distance < COLLAPSE_DISTANCE:
        problems.append(f"its images are near-copies (feature distance {distance:.3f} < {COLLAPSE_DISTANCE})")
    return "generator collapse: " + "; ".join(problems) if problems else None


def stuck_student_warning(accuracies: Sequence[float], teacher_accuracy: Optional[float]) -> Optional[str]:
    """A one-line warning when the last ``STUCK_EVALUATIONS`` student test accuracies are all
    equal and under a fifth of the teacher's; None otherwise (or with no teacher figure)."""
    recent = list(accuracies)[-STUCK_EVALUATIONS:]
    if teacher_accuracy is None or len(recent) < STUCK_EVALUATIONS:
        return None
    if max(recent) - min(recent) > 1e-9 or recent[-1] >= teacher_accuracy / 5:
        return None
    return (f"student stuck: its test accuracy has been {recent[-1]:.4f} for {STUCK_EVALUATIONS} evaluations "
            f"(the teacher's {teacher_accuracy:.4f}), as a student predicting one class would; a learning rate "
            "too high for its objective does this (docs/datafree.md, 'DDAD+ defaults')")
