"""Train states and optimizers shared by teacher training and the data-free methods."""

import functools
from typing import Any, Optional, Sequence

import jax
import numpy as np
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the BatchNorm ``batch_stats`` collection (empty dict if none)."""

    batch_stats: Any = None


def init_variables(model, rng, example_input, **init_kwargs) -> dict:
    """``model.init`` compiled: op-by-op initialisation of a network took ~17 s on a 2-core
    CPU (each tiny op a separate dispatch); compiled it takes a few seconds."""
    return jax.jit(functools.partial(model.init, **init_kwargs))(rng, example_input)


def create_state(model, tx, rng, example_input, **init_kwargs) -> TrainState:
    variables = init_variables(model, rng, example_input, **init_kwargs)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}))


def variables_of(state: TrainState) -> dict:
    v = {"params": state.params}
    if state.batch_stats:
        v["batch_stats"] = state.batch_stats
    return v


def forward(ts: TrainState, params, x, train: bool = True, name: str = ""):
    """``(output, updated batch_stats)`` of ``ts``'s network with ``params`` (BatchNorm in
    training mode on the batch when ``train``; ``{}`` for a network without BatchNorm).
    ``name`` scopes its ops in profiles."""
    with jax.named_scope(name or "forward"):
        if not ts.batch_stats:
            return ts.apply_fn({"params": params}, x, train=train), {}
        out, updates = ts.apply_fn({"params": params, "batch_stats": ts.batch_stats}, x, train=train,
                                   mutable=["batch_stats"])
        return out, updates["batch_stats"]


SCHEDULES = ("step", "cosine", "constant")  # the learning-rate schedules make_schedule knows


def make_schedule(kind: str, base_lr: float, total_steps: int,
                  milestones: Optional[Sequence[int]] = None, gamma: float = 0.1) -> optax.Schedule:
    """'constant', 'cosine' (to 0 over total_steps) or 'step' (x gamma at each milestone step)."""
    if kind == "constant":
        return optax.constant_schedule(base_lr)
    if kind == "cosine":
        return optax.cosine_decay_schedule(base_lr, max(total_steps, 1))
    if kind == "step":
        return optax.piecewise_constant_schedule(base_lr, {int(m): gamma for m in milestones or ()})
    raise ValueError(f"unknown schedule '{kind}' (use {', '.join(SCHEDULES)})")


def make_optimizer(name: str, schedule: optax.Schedule, momentum: float = 0.9,
                   weight_decay: float = 0.0, b1: float = 0.9, b2: float = 0.999):
    """SGD (PyTorch-style coupled weight decay, momentum) or Adam."""
    decay = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
    if name == "sgd":
        return optax.chain(*decay, optax.sgd(schedule, momentum=momentum))
    if name == "adam":
        return optax.chain(*decay, optax.adam(schedule, b1=b1, b2=b2))
    raise ValueError(f"unknown optimizer '{name}' (use sgd or adam)")


def first_non_finite(tree) -> Optional[str]:
    """The first leaf of ``tree`` (in tree-path order) holding a NaN or infinity, as
    ``"params/Conv_0/kernel (3 of 150 values)"``; None when every float leaf is finite."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        value = np.asarray(jax.device_get(leaf))
        if np.issubdtype(value.dtype, np.inexact):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            if bad:
                name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
                return f"{name} ({bad} of {value.size} values)"
    return None


def all_finite(tree) -> bool:
    """Whether every float leaf is finite, checked on the host: no device computation, so no
    cross-device collective for sharded leaves (eager collectives on split CPU devices hung
    once, next to an asynchronous checkpoint save, in a run with a batch-sharded memory of past batches).
    With several processes each checks the parts its own devices hold."""
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            parts = [np.asarray(shard.data) for shard in leaf.addressable_shards]
        else:
            parts = [np.asarray(jax.device_get(leaf))]
        if any(np.issubdtype(p.dtype, np.inexact) and not np.all(np.isfinite(p)) for p in parts):
            return False
    return True
