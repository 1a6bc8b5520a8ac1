"""Accuracy of a classifier on a real (test) split, in inference mode.

The split is padded, batched and placed on the devices once (``EvalSet.build``), each
batch sharded over the run's mesh; ``evaluate`` then runs a sharded ``jax.jit`` per batch
and keeps the correct counts on device until the end. Evaluating every epoch costs no
host-to-device copies and no host sync per batch.
"""

import dataclasses
import functools
from typing import List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from ddad_jax import data, parallel


@dataclasses.dataclass(frozen=True)
class EvalSet:
    batches: List[Tuple[jax.Array, jax.Array]]  # (images, labels); padded rows have label -1
    num_examples: int
    spec: data.DatasetSpec
    mesh: Optional[Mesh] = None

    @classmethod
    def build(cls, images: np.ndarray, labels: np.ndarray, spec: data.DatasetSpec,
              batch_size: int = 1000, mesh: Optional[Mesh] = None) -> "EvalSet":
        """With ``mesh``, ``batch_size`` is rounded up to a multiple of its device count."""
        put = jax.device_put
        if mesh is not None:
            batch_size = -(-batch_size // mesh.size) * mesh.size
            put = functools.partial(jax.device_put, device=NamedSharding(mesh, parallel.SHARDED))
        batches = []
        for start in range(0, len(images), batch_size):
            x, y = images[start:start + batch_size], labels[start:start + batch_size]
            pad = batch_size - len(x)
            if pad:  # keep one compiled shape; padded rows get label -1 and never count
                x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
                y = np.concatenate([y, -np.ones(pad, y.dtype)])
            batches.append((put(x), put(y)))
        return cls(batches, len(images), spec, mesh)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _count_correct(model, variables, images, labels, spec):
    logits = model.apply(variables, data.normalize(images, spec), train=False)
    return jnp.sum(jnp.argmax(logits, -1) == labels)


def evaluate(model, variables, eval_set: EvalSet) -> float:
    """Top-1 accuracy of ``model`` over every example of ``eval_set``."""
    if eval_set.mesh is not None:
        variables = parallel.replicate(variables, eval_set.mesh)
    correct = jnp.zeros((), jnp.int32)
    for x, y in eval_set.batches:
        correct = correct + _count_correct(model, variables, x, y, eval_set.spec)
    return int(correct) / eval_set.num_examples
