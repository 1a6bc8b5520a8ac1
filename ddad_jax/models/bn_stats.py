"""Capture the statistics of every BatchNorm layer's *input* while a model runs.

DDAD's first discriminator compares, layer by layer, the batch mean and variance of
what enters each of the teacher's BatchNorm layers on generated images against the
running averages in the teacher's ``batch_stats`` collection. A method interceptor sows
those statistics into a mutable collection, ``bn_input_stats``, whose tree mirrors
``batch_stats`` exactly, so no model code needs to know about it.
"""

from typing import Any, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = "bn_input_stats"
# per-image spatial means of each BatchNorm input (CMI's instance features), when asked for
INSTANCE = "bn_instance_means"


def _moments(x: jnp.ndarray, axis_name: Optional[str]) -> Tuple[jnp.ndarray, jnp.ndarray]:
    x = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean, mean_sq = jnp.mean(x, axes), jnp.mean(jnp.square(x), axes)
    if axis_name is not None:  # statistics of the global batch, not of one replica
        mean, mean_sq = jax.lax.pmean((mean, mean_sq), axis_name)
    return mean, jnp.maximum(mean_sq - jnp.square(mean), 0.0)


def apply_with_bn_stats(model: nn.Module, variables: Any, x: jnp.ndarray,
                        axis_name: Optional[str] = None, extra_collections: Tuple[str, ...] = (),
                        **kwargs) -> Tuple[Any, ...]:
    """Runs ``model`` in inference mode; returns (output, stats) where ``stats`` has the
    structure of ``variables['batch_stats']`` with the batch mean and (biased) variance
    of each BatchNorm layer's input, reduced over ``axis_name`` when given; with
    ``extra_collections`` (e.g. the sown ``features``), also ``{name: collection}``."""

    def interceptor(next_fun, args, fun_kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            mean, var = _moments(args[0], axis_name)
            context.module.sow(COLLECTION, "mean", mean, reduce_fn=lambda _, v: v, init_fn=lambda: None)
            context.module.sow(COLLECTION, "var", var, reduce_fn=lambda _, v: v, init_fn=lambda: None)
            if INSTANCE in extra_collections:
                x = args[0].astype(jnp.float32)
                context.module.sow(INSTANCE, "mean", jnp.mean(x, axis=tuple(range(1, x.ndim - 1))),
                                   reduce_fn=lambda _, v: v, init_fn=lambda: None)
        return next_fun(*args, **fun_kwargs)

    with nn.intercept_methods(interceptor):
        out, collections = model.apply(variables, x, train=False, mutable=[COLLECTION, *extra_collections], **kwargs)
    if extra_collections:
        return out, collections.get(COLLECTION, {}), {k: collections.get(k, {}) for k in extra_collections}
    return out, collections.get(COLLECTION, {})


def instance_features(means: Any) -> jnp.ndarray:
    """The ``INSTANCE`` collection as one (batch, sum of channels) array, layers in name order."""
    leaves = [v for _, v in sorted(flax.traverse_util.flatten_dict(flax.core.unfreeze(means)).items())]
    if not leaves:
        raise ValueError("no BatchNorm layers: instance features need a teacher with BatchNorm")
    return jnp.concatenate(leaves, axis=-1)
