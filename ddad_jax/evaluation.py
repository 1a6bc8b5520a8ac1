"""Accuracy of a classifier on a real (test) split, in inference mode.

Each batch is split over the run's devices (a sharded ``jax.jit``: the batch axis of the
images is sharded, the variables replicated), and correct counts stay on device until
the end, so evaluation neither runs on one CPU device of a split host nor waits on the
host after every batch.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from ddad_jax import data, parallel


@functools.partial(jax.jit, static_argnums=(0, 4))
def _count_correct(model, variables, images, labels, spec):
    logits = model.apply(variables, data.normalize(images, spec), train=False)
    return jnp.sum(jnp.argmax(logits, -1) == labels)


def evaluate(model, variables, images: np.ndarray, labels: np.ndarray, spec: data.DatasetSpec,
             batch_size: int = 1000, mesh: Optional[Mesh] = None) -> float:
    """Top-1 accuracy over all of ``images`` (the last short batch is padded, not dropped).
    With ``mesh``, batches are sharded over its devices (``batch_size`` is rounded up to a
    multiple of the device count)."""
    n = len(images)
    put = lambda x: x
    if mesh is not None:
        batch_size = -(-batch_size // mesh.size) * mesh.size
        sharded = NamedSharding(mesh, parallel.SHARDED)
        variables = parallel.replicate(variables, mesh)
        put = lambda x: jax.device_put(x, sharded)
    correct = jnp.zeros((), jnp.int32)
    for start in range(0, n, batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        pad = batch_size - len(x)
        if pad:  # keep one compiled shape; padded rows get label -1 and never count
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, -np.ones(pad, y.dtype)])
        correct = correct + _count_correct(model, variables, put(x), put(y), spec)
    return int(correct) / n
