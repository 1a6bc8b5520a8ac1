"""The frozen teacher inside a replica, as every data-free method sees it: always in inference
mode, an argument of the step (never in its state), its BatchNorm inputs' statistics those of
the global batch (reduced over ``parallel.BATCH_AXIS``)."""

import dataclasses

import flax
import jax

from ddad_jax import parallel
from ddad_jax.models.bn_stats import apply_with_bn_stats
from ddad_jax.models.layers import FEATURES


@dataclasses.dataclass(frozen=True)
class Teacher:
    """``teacher(x) -> (logits, BN-input statistics of the global batch, sown features)``;
    ``bn_stored`` are its running statistics (what DDAD's ``bn`` term matches)."""
    model: flax.linen.Module
    variables: dict

    def __call__(self, x, extra_collections=()):
        """``(logits, BN-input statistics, sown features)`` of the teacher on ``x``, and, with
        ``extra_collections``, each of those collections as a fourth element."""
        with jax.named_scope("teacher"):
            logits, stats, extra = apply_with_bn_stats(self.model, self.variables, x, axis_name=parallel.BATCH_AXIS,
                                                       extra_collections=(FEATURES, *extra_collections))
            if extra_collections:
                return logits, stats, dict(extra[FEATURES]), {c: extra[c] for c in extra_collections}
            return logits, stats, dict(extra[FEATURES])

    @property
    def bn_stored(self):
        return self.variables.get("batch_stats", {})
