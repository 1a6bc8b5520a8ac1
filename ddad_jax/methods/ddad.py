"""DDAD: Dual Discriminator Adversarial Distillation, one iteration as pure functions.

One iteration = one generator step, then ``student_steps`` student steps:

* generator step: minimise ``sum_i w_i * term_i`` over the generator's parameters, with
  DDAD's terms ``bn`` (the batch statistics entering each teacher BatchNorm layer against
  its running statistics: discriminator 1) and ``adversarial`` (minus the student-teacher
  L1 discrepancy: discriminator 2, the student) -- see ``ddad_jax.objectives``;
* student step: minimise ``student_objective(student, teacher)`` on fresh synthetic images
  (plus a batch sampled from the pool of past syntheses when there is one).

The teacher is frozen: an argument, never in the state, always in inference mode. This is
per-replica code for ``parallel.data_parallel``: statistics and losses are reduced over
``parallel.BATCH_AXIS``, so they are those of the global batch.
"""

import dataclasses
from typing import Any, Optional, Tuple

import chex
import flax
import jax
import jax.numpy as jnp

from ddad_jax import augment, backends, diversity, objectives, parallel, synthesis
from ddad_jax.config_fields import field
from ddad_jax.methods.frozen_teacher import Teacher
from ddad_jax.state import TrainState, forward

AXIS = parallel.BATCH_AXIS


@flax.struct.dataclass
class DDADState:
    step: jnp.ndarray  # iterations done
    generator: TrainState
    student: TrainState
    pool: Optional[synthesis.Pool] = None  # past syntheses (pool_size > 0)
    bn_running: Optional[Any] = None  # bn_momentum > 0: the running blend of past batches' BN statistics


@dataclasses.dataclass(frozen=True)
class DDADHyper:
    """DDAD's hyperparameters; each field read from a config is declared here once, with its
    range (``config_fields``); the others the trainer derives (``trainers.ddad.hyper``)."""
    generator_terms: Tuple[objectives.Term, ...] = (objectives.Term("bn", 1.0), objectives.Term("adversarial", 1.0))
    student_objective: str = field("l1", choices=tuple(objectives.STUDENT_OBJECTIVES))  # any that needs no labels
    kd: objectives.KDParams = objectives.KDParams(temperature=1.0)  # the objective's hyperparameters
    student_steps: int = field(5, kind=int, low=1, config="student_steps_per_generator_step")  # per generator step
    batch_size: int = field(256, kind=int, low=1)  # global
    latent_dim: int = field(256, kind=int, low=1)
    num_classes: int = 0  # > 0: classes drawn per image and fed to the generator (a `ce` term)
    # past synthesised batches the student also samples from; 0 = none, -1 (config) = every iteration's
    pool_size: int = field(0, kind=int, low=-1)
    # DDAD+ (each 0/False/None = DDAD's own behaviour):
    bn_momentum: float = field(0.0, low=0.0, high=0.999)  # > 0: the bn term compares a momentum blend over batches (Fast)
    balanced_targets: bool = field(False, choices=(True, False))  # the classes drawn for a `ce` term: each equally often per batch
    pool_normalization: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None  # (mean, std): 8-bit pool


@jax.named_scope("generator_step")  # the names sort ops in benchmarks/profile_ops.py
def generator_step(hp: DDADHyper, teacher, state: DDADState, z, targets):
    """Returns (state, metrics, (images, teacher logits)) -- the last two local and constant."""
    g, s = state.generator, state.student
    names = objectives.term_names(hp.generator_terms)

    def loss_fn(params):
        x, g_stats = forward(g, params, z, name="generator")
        t_logits, observed, t_feats = teacher(x)  # discriminator 1: the teacher's BN statistics
        observed = blended_statistics(hp, state, observed)  # DDAD+ only: a momentum across batches
        s_logits = forward(s, s.params, x, name="student")[0] if names & objectives.NEEDS_STUDENT else None  # 2
        synth = objectives.Synthesis(teacher_logits=t_logits, bn_observed=observed, bn_stored=teacher.bn_stored,
                                     student_logits=s_logits, targets=targets, images=x, teacher_features=t_feats)
        loss, values = objectives.generator_loss(hp.generator_terms, synth, AXIS)
        return loss, (g_stats, {"gen/loss": loss, **{f"gen/{k}": v for k, v in values.items()}},
                      (x, t_logits, t_feats["penultimate"], observed))

    grads, (g_stats, metrics, (x, t_logits, t_penultimate, observed)) = jax.grad(loss_fn, has_aux=True)(g.params)
    g = g.apply_gradients(grads=grads, batch_stats=g_stats)
    if hp.bn_momentum:  # the running blend moves once per batch: m * running + (1 - m) * observed
        state = state.replace(bn_running=jax.lax.stop_gradient(observed))
    metrics["diversity/class_entropy"] = diversity.class_entropy(t_logits, AXIS)
    metrics["diversity/feature_distance"] = diversity.feature_distance(jax.lax.stop_gradient(t_penultimate), AXIS)
    return state.replace(generator=g), metrics, jax.lax.stop_gradient((x, t_logits))


@jax.named_scope("student_step")
def student_step(hp: DDADHyper, teacher, state: DDADState, z, slots=None, mix=None):
    """One student update on freshly synthesised images (and a pooled batch with ``slots``);
    ``mix`` (objectives.USES_MIXUP): each fresh image is mixed with a partner from the global
    batch before the teacher sees it."""
    g, s = state.generator, state.student
    x = jax.lax.stop_gradient(forward(g, g.params, z, name="generator")[0])  # generator BN not updated
    if mix is not None:  # STKD's mixup objective
        x = augment.apply(mixup(hp), x, mix, gather=lambda v: jax.lax.all_gather(v, AXIS, tiled=True))
    t_logits = jax.lax.stop_gradient(teacher(x)[0])
    if slots is not None:  # DDAD+: a batch from the pool beside the fresh one
        x, t_logits = with_pooled(hp, state.pool, slots, x, t_logits)
    objective = objectives.student_objective(hp.student_objective)

    def loss_fn(params):
        s_logits, s_stats = forward(s, params, x, name="student")
        return jax.lax.pmean(objective(objectives.Distill(s_logits, t_logits), hp.kd), AXIS), s_stats

    (loss, s_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(s.params)
    return state.replace(student=s.apply_gradients(grads=grads, batch_stats=s_stats)), {"student/loss": loss}


def blended_statistics(hp: DDADHyper, state: DDADState, observed):
    """DDAD+'s BN momentum (Fast): the observed statistics blended with the running blend of
    past batches; ``observed`` itself in DDAD (no running blend) and on the first batch."""
    return objectives.blend_statistics(observed, state.bn_running, hp.bn_momentum, step=state.step)


def with_pooled(hp: DDADHyper, pool: synthesis.Pool, slots, x, t_logits):
    """DDAD+'s pool: the fresh images and teacher logits, followed by a batch from the pool."""
    x_old, t_old = synthesis.sample(pool, slots, hp.pool_normalization)
    return jnp.concatenate([x, x_old.astype(x.dtype)]), jnp.concatenate([t_logits, t_old])


def mixup(hp: DDADHyper) -> augment.Augment:
    return augment.Augment(mixup_alpha=hp.kd.mixup_alpha)


def state_spec(hp: DDADHyper) -> DDADState:
    """Partition specs of a DDADState: replicated, except the pool (batch-sharded)."""
    P = jax.sharding.PartitionSpec
    return DDADState(step=P(), generator=P(), student=P(), pool=synthesis.POOL_SPEC if hp.pool_size else None,
                     bn_running=P() if hp.bn_momentum else None)


def make_iteration(teacher_model, hp: DDADHyper, mesh, max_traces: Optional[int] = None,
                   adversarial: bool = True):
    """Jitted ``(state, teacher_vars, rng) -> (state, metrics)``: one DDAD iteration, the
    student steps in a ``lax.scan``, data-parallel over ``mesh``, the state donated.
    ``adversarial=False``: the student steps alone, on the generator as it stands (the
    fine-tuning tail). ``max_traces`` (tests) makes a retrace beyond it an error."""
    parallel.check_batch_size(hp.batch_size, mesh)

    mixing = hp.student_objective in objectives.USES_MIXUP

    def per_replica(state, teacher_vars, z_gen, targets, z_student, slots, mix):
        teacher = Teacher(teacher_model, teacher_vars)
        metrics = {}
        if adversarial:
            state, metrics, (x, t_logits) = generator_step(hp, teacher, state, z_gen, targets)
            if hp.pool_size:
                state = state.replace(pool=synthesis.add(state.pool, state.step, x, t_logits, hp.pool_normalization))
        state, s_metrics = jax.lax.scan(lambda st, xs: student_step(hp, teacher, st, *xs), state,
                                        (z_student, slots, mix), unroll=backends.scan_unroll(hp.student_steps))
        metrics.update(jax.tree.map(lambda m: m[-1], s_metrics))  # the last student step's loss
        return state.replace(step=state.step + 1), metrics

    per_step, spec = jax.sharding.PartitionSpec(None, AXIS), state_spec(hp)
    sharded = parallel.data_parallel(
        per_replica, mesh, out_specs=(spec, parallel.REPLICATED),
        in_specs=(spec, parallel.REPLICATED, parallel.SHARDED, parallel.SHARDED if hp.num_classes else None,
                  per_step, per_step if hp.pool_size else None, per_step if mixing else None))

    def iteration(state: DDADState, teacher_vars, rng: jax.Array):
        key = jax.random.fold_in(rng, state.step)  # everything drawn for the global batch
        k_gen, k_student = jax.random.split(key)
        z_gen, targets = synthesis.draw_latents(k_gen, hp.latent_dim, hp.num_classes, (hp.batch_size,),
                                                hp.balanced_targets)
        z_student, _ = synthesis.draw_latents(k_student, hp.latent_dim, hp.num_classes,
                                              (hp.student_steps, hp.batch_size))
        slots = None
        if hp.pool_size:
            filled = jnp.minimum(state.step + 1, hp.pool_size)  # this iteration's batch included
            slots = synthesis.draw_slots(jax.random.fold_in(key, 2), filled, hp.student_steps, hp.batch_size)
        mix = augment.draw(jax.random.fold_in(key, 3), mixup(hp), (hp.student_steps, hp.batch_size)) if mixing else None
        return sharded(state, teacher_vars, z_gen, targets, z_student, slots, mix)

    if max_traces is not None:
        iteration = chex.assert_max_traces(iteration, n=max_traces)
    return jax.jit(iteration, donate_argnums=0)
