"""Accuracy of a classifier on a real (test) split, in inference mode."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ddad_jax import data


@functools.partial(jax.jit, static_argnums=(0, 4))
def _count_correct(model, variables, images, labels, spec):
    logits = model.apply(variables, data.normalize(images, spec), train=False)
    return jnp.sum(jnp.argmax(logits, -1) == labels)


def evaluate(model, variables, images: np.ndarray, labels: np.ndarray, spec: data.DatasetSpec,
             batch_size: int = 1000) -> float:
    """Top-1 accuracy over all of ``images`` (the last short batch is padded, not dropped)."""
    n = len(images)
    correct = 0
    for start in range(0, n, batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        pad = batch_size - len(x)
        if pad:  # keep one compiled shape; padded rows get label -1 and never count
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, -np.ones(pad, y.dtype)])
        correct += int(_count_correct(model, variables, x, y, spec))
    return correct / n
