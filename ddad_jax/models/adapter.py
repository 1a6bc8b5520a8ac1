"""Any Flax (Linen) classifier as a teacher: ``FlaxTeacher`` wraps a user's module so the
distillation code can treat it like a registry model.

The builders ``clone`` a teacher with ``bn_axis_name``, ``dtype`` or ``penultimate`` and run
it as ``model.apply(variables, x, train=False)``; a user's module need not have those fields
nor that signature. The wrapper has them, holds the user's module as its child ``module`` (so
its BatchNorm layers run inside the same ``apply``, where DDAD's BN-statistics interceptor sees
them) and calls it with the keyword arguments the user says put it in inference mode
(``call_kwargs``, e.g. ``{"train": False}`` or ``{"deterministic": True}``).
"""

from typing import Any, Optional, Tuple

import flax
import flax.linen as nn
import jax.numpy as jnp

from ddad_jax.errors import UserError
from ddad_jax.models.layers import sow_feature

CHILD = "module"  # the wrapped module's name: its variables sit under this key in every collection


class FlaxTeacher(nn.Module):
    """``module(x, **dict(call_kwargs))``'s logits as float32; frozen (inference mode only)."""
    module: nn.Module
    call_kwargs: Tuple[Tuple[str, Any], ...] = ()  # a tuple of pairs: module fields must be hashable
    bn_axis_name: Optional[str] = None  # unused: a teacher never computes batch statistics
    dtype: Any = jnp.float32  # unused: the user's module keeps its own compute dtype
    penultimate: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if train:
            raise UserError("a teacher given as a Flax module is frozen: it only runs in inference mode")
        if self.penultimate:
            raise UserError("this method needs the teacher's penultimate features (HiDFD), which only the "
                            "registry's models expose; use a DDAD-family method with a Flax-module teacher")
        logits = jnp.asarray(self.module(x, **dict(self.call_kwargs))).astype(jnp.float32)
        # The collapse measure's feature distance reads the teacher's sown 'penultimate'
        # features; a user's module sows none, so its logits stand in for them.
        sow_feature(self, "penultimate", logits)
        return logits


def wrap_variables(variables: Any) -> dict:
    """The user's variables ``{"params": ..., "batch_stats": ...}`` as ``FlaxTeacher``'s: each
    collection nested under ``CHILD``."""
    variables = flax.core.unfreeze(variables)
    if not isinstance(variables, dict) or "params" not in variables:
        raise UserError("teacher variables must be a dict with a 'params' collection (and 'batch_stats' for "
                        f"DDAD's BN term), got {type(variables).__name__} with keys "
                        f"{sorted(variables) if isinstance(variables, dict) else '-'}")
    return {collection: {CHILD: tree} for collection, tree in variables.items()}
