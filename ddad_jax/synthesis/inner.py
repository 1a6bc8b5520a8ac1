"""The inner optimisation every inversion synthesiser shares: a few steps of its own Adam on
what makes the batch (pixels, or a generator and its latents), minimising the generator
terms on the teacher's view of it."""

from typing import Any, Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax


class Head(NamedTuple):
    """A network trained in the same inner steps by its own optimiser (CMI's contrastive head)."""
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation


class Inner(NamedTuple):
    """What ``optimize`` returns; per-step values are stacked on a leading axis."""
    params: Any  # after the last step
    grad_sum: Any  # the sum of the steps' gradients (Fast's first-order meta-gradient)
    losses: jnp.ndarray  # (steps,)
    values: Dict[str, jnp.ndarray]  # each generator term, (steps,)
    observed: Any  # the teacher's BN-input statistics at each step, (steps, ...)
    head: Optional[Head]  # the co-trained head after the last step


def optimize(loss_fn: Callable, params, tx: optax.GradientTransformation, steps: int, xs,
             project: Callable = lambda p: p, head: Optional[Head] = None) -> Inner:
    """``steps`` updates of ``params`` by ``tx`` (from a fresh optimiser state), minimising
    ``loss_fn(params, head_params, *xs_t) -> (loss, (term values, BN statistics))`` where
    ``xs_t`` is step t's slice of ``xs`` (the views drawn for the round). ``project`` maps the
    parameters back into their valid set after each update (DeepInversion's pixel range);
    ``head`` is updated in the same steps from its own gradient."""

    def step(carry, xs_now):
        p, opt, head_p, head_opt, grad_sum = carry
        (loss, (values, observed)), (g, head_g) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            p, head_p, *xs_now)
        updates, opt = tx.update(g, opt, p)
        grad_sum = jax.tree.map(jnp.add, grad_sum, g)
        p = project(optax.apply_updates(p, updates))
        if head is not None:
            head_updates, head_opt = head.tx.update(head_g, head_opt, head_p)
            head_p = optax.apply_updates(head_p, head_updates)
        return (p, opt, head_p, head_opt, grad_sum), (loss, values, observed)

    head_p, head_opt = (head.params, head.opt_state) if head is not None else (None, None)
    carry = (params, tx.init(params), head_p, head_opt, jax.tree.map(jnp.zeros_like, params))
    (params, _, head_p, head_opt, grad_sum), (losses, values, observed) = jax.lax.scan(step, carry, xs, length=steps)
    return Inner(params, grad_sum, losses, values, observed,
                 head._replace(params=head_p, opt_state=head_opt) if head is not None else None)


class Synthesizer(NamedTuple):
    """What an inversion synthesiser provides (``pixels``, ``reinit_generator``,
    ``meta_generator``): each a function of the method's hyperparameters ``hp``."""
    noise_shape: Callable  # (hp, image_shape) -> one example's noise shape
    start: Callable  # (hp, generator, state, noise, init_rng) -> (params to optimise, params -> images)
    optimizer: Callable  # hp -> the inner optax optimiser
    project: Callable  # hp -> (params -> params after each update)
    finish: Callable = lambda state, inner: state  # (state, Inner) -> state once the round's batch is made
    persistent_generator: bool = False  # the state keeps a generator between rounds


def no_projection(hp) -> Callable:
    del hp
    return lambda p: p
