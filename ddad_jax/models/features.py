"""A classifier's intermediate features, and its classifier applied to features alone.

Classifiers sow ``attention1..n`` (each stage's output) and ``penultimate`` (what enters
their last Dense layer) into the ``features`` collection (``layers.sow_feature``): CTKD's
attention maps and HiDFD's classifier-sharing alignment read them, and nothing else pays
for them (sowing into an immutable collection is a no-op).
"""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.models.layers import FEATURES


def apply_with_features(model: nn.Module, variables: Any, x: jnp.ndarray, train: bool = False,
                        mutable: Sequence[str] = ()) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray], Dict[str, Any]]:
    """``(logits, features, updated collections)``: ``features`` maps each sown name to its
    array; ``updated collections`` holds those in ``mutable`` (e.g. ``batch_stats``)."""
    logits, cols = model.apply(variables, x, train=train, mutable=[FEATURES, *mutable])
    cols = dict(cols)
    return logits, dict(cols.pop(FEATURES, {})), cols


def head_logits(model: nn.Module, params: Any, features: jnp.ndarray) -> jnp.ndarray:
    """``model``'s classifier (its last Dense layer, ``params[model.head]``) on ``features``
    shaped like its penultimate features: HiDFD passes the student's projected features
    through the teacher's classifier this way."""
    head = params[model.head]
    return (features.astype(jnp.float32) @ head["kernel"] + head["bias"]).astype(jnp.float32)
