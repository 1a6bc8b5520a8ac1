"""Knowledge distillation on real images: one student step as a pure function.

A batch of real images (all of a training set, or a handful) and their labels; the frozen
teacher labels them softly; the student minimises ``student_objective`` (``objectives``:
``scratch``, ``kd``, ``stkd``, ``ctkd``, ``ka``, ``dtd``, ``ka_dtd``). Two objectives add to
the step: ``stkd`` mixes pairs of images first (mixup), and ``ctkd`` trains a *scratch
teacher* -- the teacher's architecture, from scratch, on the labels -- whose logits the
student follows step by step while the pre-trained expert's attention maps guide it.

Per-replica code for ``parallel.data_parallel``: losses are ``pmean``'d over
``parallel.BATCH_AXIS``, BatchNorm uses the global batch.
"""

import dataclasses
from typing import Optional

import flax
import jax
import jax.numpy as jnp

from ddad_jax import augment as augment_lib, data, objectives, parallel
from ddad_jax.models.features import apply_with_features
from ddad_jax.models.layers import FEATURES
from ddad_jax.state import TrainState

AXIS = parallel.BATCH_AXIS


@flax.struct.dataclass
class KDState:
    step: jnp.ndarray  # steps done
    student: TrainState
    scratch: Optional[TrainState] = None  # CTKD's scratch teacher


@dataclasses.dataclass(frozen=True)
class KDHyper:
    student_objective: str = "kd"
    kd: objectives.KDParams = objectives.KDParams()
    augment: augment_lib.Augment = augment_lib.Augment()  # the dataset's (crop, flip); mixup is the objective's

    @property
    def uses(self):
        name = self.student_objective
        return {"features": name in objectives.NEEDS_FEATURES, "scratch": name in objectives.NEEDS_SCRATCH,
                "mixup": name in objectives.USES_MIXUP, "teacher": name not in objectives.NO_TEACHER}


def _run(ts: TrainState, params, x, features: bool):
    """(logits, updated batch_stats, features or None) of a train-mode forward pass."""
    variables = {"params": params, **({"batch_stats": ts.batch_stats} if ts.batch_stats else {})}
    mutable = (["batch_stats"] if ts.batch_stats else []) + ([FEATURES] if features else [])
    if not mutable:
        return ts.apply_fn(variables, x, train=True), {}, None
    logits, cols = ts.apply_fn(variables, x, train=True, mutable=mutable)
    return logits, cols.get("batch_stats", {}), dict(cols[FEATURES]) if features else None


def student_step(hp: KDHyper, teacher_model, teacher_vars, spec: data.DatasetSpec, state: KDState,
                 images, labels, draws):
    """One KD step on this replica's part of a batch (uint8 ``images``, int ``labels``);
    ``draws`` are the global batch's augmentation and mixup parameters (this replica's part)."""
    uses = hp.uses
    x = images.astype(jnp.float32) / 255.0
    gather = lambda v: jax.lax.all_gather(v, AXIS, tiled=True)
    if hp.augment.active:
        x = augment_lib.apply(hp.augment, x, draws["augment"])
    x = data.normalize(x * 255.0, spec)
    partner_labels = mix = None
    if uses["mixup"]:
        aug = augment_lib.Augment(mixup_alpha=hp.kd.mixup_alpha)
        x = augment_lib.apply(aug, x, draws["mixup"], gather=gather)
        partner_labels, mix = gather(labels)[draws["mixup"]["partner"]], draws["mixup"]["lam"]
    t_logits = t_feats = None
    if uses["teacher"]:
        if uses["features"]:
            t_logits, t_feats, _ = apply_with_features(teacher_model, teacher_vars, x)
        else:
            t_logits = teacher_model.apply(teacher_vars, x, train=False)
        t_logits = jax.lax.stop_gradient(t_logits)
        t_feats = jax.lax.stop_gradient(t_feats)
    metrics, scratch_logits = {}, None
    if uses["scratch"]:  # the scratch teacher's own step: cross-entropy on the labels
        sc = state.scratch

        def scratch_loss(params):
            logits, stats, _ = _run(sc, params, x, False)
            return jax.lax.pmean(objectives.cross_entropy(logits, labels), AXIS), (stats, logits)

        (loss, (stats, scratch_logits)), grads = jax.value_and_grad(scratch_loss, has_aux=True)(sc.params)
        state = state.replace(scratch=sc.apply_gradients(grads=grads, batch_stats=stats))
        metrics["scratch/loss"] = loss
    objective = objectives.student_objective(hp.student_objective)
    s = state.student

    def loss_fn(params):
        logits, stats, feats = _run(s, params, x, uses["features"])
        d = objectives.Distill(logits, t_logits, labels, feats, t_feats, scratch_logits, partner_labels, mix)
        acc = jnp.mean(jnp.argmax(logits, -1) == labels)
        return jax.lax.pmean(objective(d, hp.kd), AXIS), (stats, jax.lax.pmean(acc, AXIS))

    (loss, (stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(s.params)
    state = state.replace(student=s.apply_gradients(grads=grads, batch_stats=stats), step=state.step + 1)
    return state, {"student/loss": loss, "student/train_acc": acc, **metrics}


def draw(hp: KDHyper, rng, batch_size: int):
    """The global batch's random augmentation and mixup parameters (so results do not
    depend on the number of devices)."""
    k_aug, k_mix = jax.random.split(rng)
    out = {}
    if hp.augment.active:
        out["augment"] = augment_lib.draw(k_aug, hp.augment, (batch_size,))
    if hp.uses["mixup"]:
        out["mixup"] = augment_lib.draw(k_mix, augment_lib.Augment(mixup_alpha=hp.kd.mixup_alpha), (batch_size,))
    return out


def make_step(hp: KDHyper, teacher_model, spec: data.DatasetSpec, mesh):
    """Jitted ``(state, teacher_vars, images, labels, rng) -> (state, metrics)``, data-parallel
    over ``mesh``, the state donated."""
    per_replica = lambda state, tv, images, labels, draws: student_step(hp, teacher_model, tv, spec, state, images,
                                                                       labels, draws)
    sharded = parallel.data_parallel(
        per_replica, mesh, out_specs=(parallel.REPLICATED, parallel.REPLICATED),
        in_specs=(parallel.REPLICATED, parallel.REPLICATED, parallel.SHARDED, parallel.SHARDED, parallel.SHARDED))

    def step(state: KDState, teacher_vars, images, labels, rng):
        return sharded(state, teacher_vars, images, labels, draw(hp, jax.random.fold_in(rng, state.step),
                                                                  images.shape[0]))

    return jax.jit(step, donate_argnums=0)
