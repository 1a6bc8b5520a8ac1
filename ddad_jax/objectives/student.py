"""The student's objectives: how far its logits are from the teacher's on a batch.

Each is ``fn(student_logits, teacher_logits, temperature) -> scalar``, a mean over the
local batch (a data-parallel caller ``pmean``s it: equal shards make that the global mean).
"""

from typing import Callable, Dict

import jax
import jax.numpy as jnp


def l1(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, temperature: float = 1.0) -> jnp.ndarray:
    """Mean absolute difference between logits (DFAD's and DDAD's discrepancy); no temperature."""
    del temperature
    return jnp.mean(jnp.abs(student_logits - teacher_logits))


def kl(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, temperature: float = 1.0) -> jnp.ndarray:
    """Hinton's KD: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch
    (the ``T^2`` keeps gradient sizes comparable across temperatures)."""
    t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
    s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
    return temperature**2 * jnp.mean(jnp.sum(jnp.exp(t) * (t - s), axis=-1))


STUDENT_OBJECTIVES: Dict[str, Callable[..., jnp.ndarray]] = {"l1": l1, "kl": kl}


def student_objective(name: str) -> Callable[..., jnp.ndarray]:
    if name not in STUDENT_OBJECTIVES:
        raise ValueError(f"unknown student objective '{name}' (known: {', '.join(sorted(STUDENT_OBJECTIVES))})")
    return STUDENT_OBJECTIVES[name]
