"""Data-free methods that synthesise each batch by an inner optimisation, then train the
student on the pool of everything synthesised so far: DeepInversion, CMI and Fast.

One round = ``synthesis_steps`` steps of an inner Adam on what makes the batch, minimising
the weighted generator terms (``objectives.generator``) on the teacher's view of it; the
final batch and the teacher's logits go into the pool; then ``student_steps`` student steps,
each on a batch sampled from the pool. What makes the batch (``synthesizer``) is one module
each in ``ddad_jax/synthesis/``:

* ``pixels`` (DeepInversion): the images themselves, from Gaussian noise each round;
* ``reinit_generator`` (CMI): a generator initialised afresh each round, and its latents;
* ``meta_generator`` (Fast): a copy of a persistent generator, and fresh latents; the
  persistent one learns an initialisation from which a few steps suffice (first-order MAML:
  one outer Adam step per round on the sum of the inner steps' gradients).

A round reads top to bottom in ``round_step``: synthesise (``synthesize``), keep the batch
(contrast bank, meta-generator, BN blend, pool), then the student steps (``student_step``).

Fast's BN statistics with momentum (``bn_momentum`` > 0): the batch statistics the ``bn``
term compares are blended with a running average over past rounds, updated once per round.
CMI's contrastive term (a ``contrastive`` generator term): each inner step also shows the
teacher a *local* view (random resized crop) of the batch; a persistent head (its own Adam,
trained in the inner steps beside the images) projects both views' instance features, and
past rounds' features, drawn from a memory bank, are the extra negatives
(``objectives.contrastive``). After the round the final batch's features enter the bank.
The teacher is frozen; per-replica code for ``parallel.data_parallel``.
"""

import dataclasses
from typing import Any, NamedTuple, Optional, Tuple

import flax
import jax
import jax.numpy as jnp

from ddad_jax import augment, diversity, objectives, parallel, synthesis
from ddad_jax.config_fields import field
from ddad_jax.methods.frozen_teacher import Teacher
from ddad_jax.models.bn_stats import INSTANCE, instance_features
from ddad_jax.models.gan import ContrastHead
from ddad_jax.objectives import contrastive
from ddad_jax.state import TrainState, forward
from ddad_jax.synthesis import inner as inner_lib, meta_generator, pixels, reinit_generator

AXIS = parallel.BATCH_AXIS
SYNTHESIZERS = {"pixels": pixels.SYNTHESIZER, "reinit_generator": reinit_generator.SYNTHESIZER,
                "meta_generator": meta_generator.SYNTHESIZER}
# The views the teacher sees while a batch is synthesised: DeepInversion jitters (a shift and a
# flip), CMI and Fast crop with 4 pixels of padding and flip; each image its own draw.
VIEW = augment.Augment(flip=True, shift=4, pad_mode="constant")


@flax.struct.dataclass
class InversionState:
    step: jnp.ndarray  # rounds done
    student: TrainState
    pool: synthesis.Pool
    generator: Optional[TrainState] = None  # meta_generator: the learnt initialisation (outer Adam)
    bn_running: Optional[Any] = None  # bn_momentum > 0: the running blend of past rounds' batch statistics
    head: Optional[TrainState] = None  # contrastive: CMI's projection head (never reset)
    bank: Optional[contrastive.Bank] = None  # contrastive: past rounds' instance features


@dataclasses.dataclass(frozen=True)
class InversionHyper:
    """The inversion methods' hyperparameters; each field read from a config is declared here
    once, with its range (``config_fields``); the others the trainer derives."""
    synthesizer: str = field("pixels", choices=tuple(SYNTHESIZERS))
    synthesis_steps: int = field(20, kind=int, low=1)  # inner steps per round (DeepInversion 2000, CMI 200, Fast 2-10)
    synthesis_lr: float = field(0.1, low=0.0, open_low=True)  # pixels, or the generator's parameters
    latent_lr: float = field(0.01, low=0.0, open_low=True)  # the latents (generator synthesizers)
    generator_terms: Tuple[objectives.Term, ...] = (objectives.Term("bn", 10.0), objectives.Term("ce", 1.0))
    student_objective: str = field("kl", choices=tuple(objectives.STUDENT_OBJECTIVES))
    kd: objectives.KDParams = objectives.KDParams(temperature=20.0)
    student_steps: int = field(10, kind=int, low=1, config="student_steps_per_round")  # per round
    batch_size: int = field(128, kind=int, low=1)  # global, synthesis and student
    latent_dim: int = field(100, kind=int, low=1)
    num_classes: int = 10
    pool_size: int = field(100, kind=int, low=-1)  # rounds kept; -1 (config) = every round's
    bn_momentum: float = field(0.0, low=0.0, high=0.999)
    augment_views: bool = field(True, choices=(True, False))
    pixel_bounds: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]] = None  # pixels: per-channel (low, high)
    contrast_temperature: float = field(0.2, low=0.0, open_low=True)  # CMI's cr_T
    contrast_head_dim: int = field(256, kind=int, low=1)
    contrast_negatives: int = field(4096, kind=int, low=0)  # bank entries drawn per round as extra negatives
    local_crop_area: float = field(0.25, low=0.0, high=1.0, open_low=True)  # the local view: a resized crop of 25-100 % of the image

    @property
    def contrasting(self) -> bool:
        return bool(objectives.term_names(self.generator_terms) & objectives.NEEDS_CONTRAST)


class RoundDraws(NamedTuple):
    """What a round draws for the global batch (sharded over replicas, step axis first)."""
    noise: jnp.ndarray  # (batch, *noise shape): pixels, or latents
    targets: jnp.ndarray  # (batch,) classes for the `ce` term
    views: Optional[Any]  # (steps, batch) the teacher's augmented view at each inner step
    local_views: Optional[Any]  # (steps, batch) CMI's local crops
    slots: jnp.ndarray  # (student steps, batch) pool slots the student samples
    init_rng: jax.Array  # replicated: a re-initialised generator's and the bank draw's key


class Synthesized(NamedTuple):
    """A round's batch and what the round keeps of its making."""
    images: jnp.ndarray
    teacher_logits: jnp.ndarray
    metrics: dict
    observed: Any  # the last inner step's BN-input statistics (the running blend's update)
    inner: inner_lib.Inner
    local: Optional[jnp.ndarray] = None  # contrastive: the final batch's local and global
    global_: Optional[jnp.ndarray] = None  # instance features, for the bank


# ---------------------------------------------------------------------------------------------
# CMI's contrastive parts

def local_view(hp: InversionHyper) -> augment.Augment:
    """CMI's local view: a random resized crop, then a flip."""
    return augment.Augment(flip=True, crop_area=hp.local_crop_area)


def instances(hp: InversionHyper, teacher: Teacher, x, view, lview):
    """The teacher on the global view ``(logits, BN statistics, features)``, and the (local,
    global) views' instance features (per-image means of every BN input)."""
    seen = augment.apply(VIEW, x, view) if view is not None else x
    t_logits, observed, t_feats, extra = teacher(seen, (INSTANCE,))
    local = instance_features(teacher(augment.apply(local_view(hp), x, lview), (INSTANCE,))[3][INSTANCE])
    return (t_logits, observed, t_feats), local, instance_features(extra[INSTANCE])


# ---------------------------------------------------------------------------------------------
# one round

def synthesize(hp: InversionHyper, teacher: Teacher, state: InversionState, make_images, params,
               draws: RoundDraws) -> Synthesized:
    """The inner optimisation of ``params`` (``make_images(params) -> images``) by the
    synthesiser's optimiser, then the teacher on the final batch."""
    synth = SYNTHESIZERS[hp.synthesizer]
    names = objectives.term_names(hp.generator_terms)
    s = state.student
    head = ContrastHead(hp.contrast_head_dim)
    cached = contrastive.bank_draw(jax.random.fold_in(draws.init_rng, 1), state.bank,
                                   hp.contrast_negatives) if hp.contrasting else None

    def loss_fn(p, head_params, view, lview):
        x = make_images(p)
        seen = augment.apply(VIEW, x, view) if view is not None else x
        contrast = None
        if hp.contrasting:
            (t_logits, observed, t_feats), local, global_ = instances(hp, teacher, x, view, lview)
            contrast = contrastive.Contrast(local, global_, *cached, head=lambda f: head.apply({"params": head_params}, f),
                                            temperature=hp.contrast_temperature)
        else:
            t_logits, observed, t_feats = teacher(seen)
        synthesis_view = objectives.Synthesis(
            teacher_logits=t_logits, bn_observed=objectives.blend_statistics(observed, state.bn_running, hp.bn_momentum,
                                                                          step=state.step),
            bn_stored=teacher.bn_stored, targets=draws.targets, images=x, teacher_features=t_feats, contrast=contrast,
            student_logits=forward(s, s.params, seen, train=False, name="student")[0]
            if names & objectives.NEEDS_STUDENT else None)
        loss, values = objectives.generator_loss(hp.generator_terms, synthesis_view, AXIS)
        return loss, (values, observed)

    co_trained = inner_lib.Head(state.head.params, state.head.opt_state, state.head.tx) if hp.contrasting else None
    inner = inner_lib.optimize(loss_fn, params, synth.optimizer(hp), hp.synthesis_steps,
                               (draws.views, draws.local_views), synth.project(hp), co_trained)
    x = jax.lax.stop_gradient(make_images(inner.params))
    t_logits, _, t_feats = jax.lax.stop_gradient(teacher(x))
    metrics = {"synth/loss": inner.losses[-1], **{f"synth/{k}": v[-1] for k, v in inner.values.items()},
               "diversity/class_entropy": diversity.class_entropy(t_logits, AXIS),
               "diversity/feature_distance": diversity.feature_distance(t_feats["penultimate"], AXIS)}
    out = Synthesized(x, t_logits, metrics, jax.tree.map(lambda o: o[-1], inner.observed), inner)
    if hp.contrasting:  # the final batch's features under the last step's views, for the bank
        last = lambda v: None if v is None else jax.tree.map(lambda a: a[-1], v)
        _, local, global_ = instances(hp, teacher, x, last(draws.views), last(draws.local_views))
        out = out._replace(local=jax.lax.stop_gradient(local), global_=jax.lax.stop_gradient(global_))
    return out


def keep_contrast(hp: InversionHyper, state: InversionState, made: Synthesized) -> InversionState:
    """CMI: the head as the inner steps left it; the global batch's features enter the bank
    (every replica adds all of them: the bank stays replicated)."""
    head = made.inner.head
    gather = lambda a: parallel.gather_replicated(a, AXIS)
    return state.replace(head=state.head.replace(step=state.head.step + hp.synthesis_steps, params=head.params,
                                                 opt_state=head.opt_state),
                         bank=contrastive.bank_add(state.bank, gather(made.local), gather(made.global_)))


def update_bn_running(hp: InversionHyper, state: InversionState, observed) -> InversionState:
    """Fast's BN momentum: the running blend moves once per round, from the last inner step."""
    blended = objectives.blend_statistics(observed, state.bn_running, hp.bn_momentum, step=state.step)
    return state.replace(bn_running=jax.lax.stop_gradient(blended))


@jax.named_scope("student_step")
def student_step(hp: InversionHyper, state: InversionState, slots):
    """One student update on a batch sampled from the pool (the teacher's logits are stored)."""
    x, t_logits = synthesis.sample(state.pool, slots)
    objective = objectives.student_objective(hp.student_objective)
    s = state.student

    def loss_fn(params):
        s_logits, s_stats = forward(s, params, x, name="student")
        return jax.lax.pmean(objective(objectives.Distill(s_logits, t_logits), hp.kd), AXIS), s_stats

    (loss, s_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(s.params)
    return state.replace(student=s.apply_gradients(grads=grads, batch_stats=s_stats)), {"student/loss": loss}


def round_step(hp: InversionHyper, teacher_model, generator, state: InversionState, teacher_vars,
               draws: RoundDraws, distil: bool = True):
    """One round on this replica: synthesise a batch, keep it, then the student steps."""
    synth = SYNTHESIZERS[hp.synthesizer]
    teacher = Teacher(teacher_model, teacher_vars)
    params, make_images = synth.start(hp, generator, state, draws.noise, draws.init_rng)
    made = synthesize(hp, teacher, state, make_images, params, draws)
    if hp.contrasting:
        state = keep_contrast(hp, state, made)
    state = synth.finish(state, made.inner)  # Fast: the meta-generator's outer step
    if hp.bn_momentum:
        state = update_bn_running(hp, state, made.observed)
    state = state.replace(pool=synthesis.add(state.pool, state.step, made.images, made.teacher_logits))
    metrics = made.metrics
    if distil:
        state, s_metrics = jax.lax.scan(lambda st, sl: student_step(hp, st, sl), state, draws.slots)
        metrics.update(jax.tree.map(lambda m: m[-1], s_metrics))
    return state.replace(step=state.step + 1), metrics


def state_spec(hp: InversionHyper) -> InversionState:
    P = jax.sharding.PartitionSpec
    return InversionState(step=P(), student=P(), pool=synthesis.POOL_SPEC,
                          generator=P() if SYNTHESIZERS[hp.synthesizer].persistent_generator else None,
                          bn_running=P() if hp.bn_momentum else None,
                          head=P() if hp.contrasting else None, bank=P() if hp.contrasting else None)


def draw_round(hp: InversionHyper, image_shape, state: InversionState, rng) -> RoundDraws:
    """Everything a round draws, for the global batch (so results do not depend on devices)."""
    key = jax.random.fold_in(rng, state.step)
    k_noise, k_targets, k_views, k_slots, k_init = jax.random.split(key, 5)
    steps = (hp.synthesis_steps, hp.batch_size)
    noise_shape = SYNTHESIZERS[hp.synthesizer].noise_shape(hp, image_shape)
    return RoundDraws(
        noise=jax.random.normal(k_noise, (hp.batch_size, *noise_shape)),
        targets=jax.random.randint(k_targets, (hp.batch_size,), 0, hp.num_classes),
        views=augment.draw(k_views, VIEW, steps) if hp.augment_views else None,
        local_views=augment.draw(jax.random.fold_in(k_views, 1), local_view(hp), steps, image_shape[0])
        if hp.contrasting else None,
        slots=synthesis.draw_slots(k_slots, jnp.minimum(state.step + 1, hp.pool_size), hp.student_steps, hp.batch_size),
        init_rng=k_init)


def make_round(teacher_model, generator, hp: InversionHyper, image_shape, mesh, distil: bool = True):
    """Jitted ``(state, teacher_vars, rng) -> (state, metrics)``: one round, data-parallel over
    ``mesh``; noise, targets, views and pool slots are drawn for the global batch."""
    parallel.check_batch_size(hp.batch_size, mesh)
    per_step = jax.sharding.PartitionSpec(None, AXIS)
    draws_spec = RoundDraws(noise=parallel.SHARDED, targets=parallel.SHARDED,
                            views=per_step if hp.augment_views else None,
                            local_views=per_step if hp.contrasting else None, slots=per_step,
                            init_rng=parallel.REPLICATED)
    spec = state_spec(hp)
    sharded = parallel.data_parallel(
        lambda st, tv, draws: round_step(hp, teacher_model, generator, st, tv, draws, distil), mesh,
        in_specs=(spec, parallel.REPLICATED, draws_spec), out_specs=(spec, parallel.REPLICATED))

    def round_fn(state: InversionState, teacher_vars, rng):
        return sharded(state, teacher_vars, draw_round(hp, image_shape, state, rng))

    return jax.jit(round_fn, donate_argnums=0)
