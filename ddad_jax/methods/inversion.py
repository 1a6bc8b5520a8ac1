"""Data-free methods that synthesise each batch by an inner optimisation, then train the
student on the pool of everything synthesised so far: DeepInversion, CMI and Fast.

One round = ``synthesis_steps`` steps of an inner Adam on what makes the batch, minimising
the weighted generator terms (``objectives.generator``) on the teacher's view of it; the
final batch and the teacher's logits go into the pool; then ``student_steps`` student steps,
each on a batch sampled from the pool. What makes the batch (``synthesizer``):

* ``pixels`` (DeepInversion): the images themselves, from Gaussian noise each round;
* ``reinit_generator`` (CMI): a generator initialised afresh each round, and its latents;
* ``meta_generator`` (Fast): a copy of a persistent generator, and fresh latents; the
  persistent one learns an initialisation from which a few steps suffice (first-order MAML:
  one outer Adam step per round on the sum of the inner steps' gradients).

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
from typing import Any, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from ddad_jax import augment, diversity, objectives, parallel, synthesis
from ddad_jax.config_fields import field
from ddad_jax.methods.ddad import Teacher
from ddad_jax.models.gan import ContrastHead
from ddad_jax.objectives import contrastive
from ddad_jax.state import TrainState, forward

AXIS = parallel.BATCH_AXIS
SYNTHESIZERS = ("pixels", "reinit_generator", "meta_generator")
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
    synthesizer: str = field("pixels", choices=SYNTHESIZERS)
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
    pool_size: int = field(100, kind=int, low=0)  # rounds kept
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


def local_view(hp: InversionHyper) -> augment.Augment:
    """CMI's local view: a random resized crop, then a flip."""
    return augment.Augment(flip=True, crop_area=hp.local_crop_area)


def synthesize(hp: InversionHyper, teacher: Teacher, state: InversionState, make_images, params, targets, views,
               local_views=None, bank_rng=None):
    """The inner optimisation: ``synthesis_steps`` Adam steps on ``params`` (pixels, or
    (generator params, latents)), ``make_images(params) -> (images, updated generator BN)``.
    Returns (final images, the teacher's logits on them, metrics, the last observed BN
    statistics, the sum of the inner steps' gradients, and -- contrasting -- the head's
    state after the round and the final batch's (local, global) instance features)."""
    names = objectives.term_names(hp.generator_terms)
    lr = hp.synthesis_lr if hp.synthesizer == "pixels" else {"generator": hp.synthesis_lr, "latents": hp.latent_lr}
    if isinstance(lr, dict):
        tx = optax.multi_transform({k: optax.adam(v, b1=0.5, b2=0.999) for k, v in lr.items()},
                                   {"generator": "generator", "latents": "latents"})
    else:
        tx = optax.adam(lr, b1=0.5, b2=0.99)
    s = state.student
    momentum = jnp.where(state.step > 0, hp.bn_momentum, 0.0)  # the first round has no past to blend
    head = ContrastHead(hp.contrast_head_dim)
    cached = contrastive.bank_draw(bank_rng, state.bank, hp.contrast_negatives) if hp.contrasting else None

    def instances(x, view, lview):
        """Teacher outputs on the global view and both views' instance features."""
        seen = augment.apply(VIEW, x, view) if view is not None else x
        t_logits, observed, t_feats, global_ = teacher.with_instances(seen)
        local = teacher.with_instances(augment.apply(local_view(hp), x, lview))[3]
        return (t_logits, observed, t_feats), local, global_

    def loss_fn(p, head_params, view, lview):
        x, _ = make_images(p)
        seen = augment.apply(VIEW, x, view) if view is not None else x
        contrast = None
        if hp.contrasting:
            (t_logits, observed, t_feats), local, global_ = instances(x, view, lview)
            contrast = contrastive.Contrast(local, global_, *cached, head=lambda f: head.apply({"params": head_params}, f),
                                            temperature=hp.contrast_temperature)
        else:
            t_logits, observed, t_feats = teacher(seen)
        synth = objectives.Synthesis(
            t_logits, objectives.blend_statistics(observed, state.bn_running, momentum), teacher.bn_stored,
            forward(s, s.params, seen, train=False, name="student")[0] if names & objectives.NEEDS_STUDENT else None,
            targets, x, t_feats, contrast)
        loss, values = objectives.generator_loss(hp.generator_terms, synth, AXIS)
        return loss, (values, observed)

    def inner(carry, views_now):
        p, opt, head_p, head_opt, grad_sum = carry
        (loss, (values, observed)), (g, head_g) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            p, head_p, *views_now)
        updates, opt = tx.update(g, opt, p)
        grad_sum = jax.tree.map(jnp.add, grad_sum, g)
        p = optax.apply_updates(p, updates)
        if hp.pixel_bounds is not None:  # DeepInversion keeps pixels in the valid image range
            p = jnp.clip(p, jnp.asarray(hp.pixel_bounds[0]), jnp.asarray(hp.pixel_bounds[1]))
        if hp.contrasting:  # the head learns in the same steps, by its own Adam
            head_updates, head_opt = state.head.tx.update(head_g, head_opt, head_p)
            head_p = optax.apply_updates(head_p, head_updates)
        return (p, opt, head_p, head_opt, grad_sum), (loss, values, observed)

    zeros = jax.tree.map(jnp.zeros_like, params)
    head_p, head_opt = (state.head.params, state.head.opt_state) if hp.contrasting else (None, None)
    (params, _, head_p, head_opt, grad_sum), (losses, values, observed) = jax.lax.scan(
        inner, (params, tx.init(params), head_p, head_opt, zeros), (views, local_views), length=hp.synthesis_steps)
    x = jax.lax.stop_gradient(make_images(params)[0])
    t_logits, _, t_feats = jax.lax.stop_gradient(teacher(x))
    metrics = {"synth/loss": losses[-1], **{f"synth/{k}": v[-1] for k, v in values.items()},
               "diversity/class_entropy": diversity.class_entropy(t_logits, AXIS),
               "diversity/feature_distance": diversity.feature_distance(t_feats["penultimate"], AXIS)}
    last_observed = jax.tree.map(lambda o: o[-1], observed)
    contrast_out = None
    if hp.contrasting:  # the final batch's features under the last step's views, for the bank
        last = lambda v: None if v is None else jax.tree.map(lambda a: a[-1], v)
        _, local, global_ = instances(x, last(views), last(local_views))
        head_state = state.head.replace(step=state.head.step + hp.synthesis_steps, params=head_p, opt_state=head_opt)
        contrast_out = (head_state, jax.lax.stop_gradient(local), jax.lax.stop_gradient(global_))
    return x, t_logits, metrics, last_observed, grad_sum, contrast_out


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


def round_step(hp: InversionHyper, teacher_model, generator, state: InversionState, teacher_vars, noise, targets,
               views, local_views, slots, init_rng, distil: bool = True):
    """One round on this replica: synthesise a batch, pool it, then the student steps."""
    teacher = Teacher(teacher_model, teacher_vars)
    if hp.synthesizer == "pixels":
        make_images = lambda p: (p, None)
        params = noise
    else:
        if hp.synthesizer == "reinit_generator":
            gen_params = generator.clone(bn_axis_name=None).init(init_rng, noise[:1])
        else:
            gen_params = {"params": state.generator.params, "batch_stats": state.generator.batch_stats}
        batch_stats = gen_params.get("batch_stats", {})

        def make_images(p):
            out, _ = generator.apply({"params": p["generator"], "batch_stats": batch_stats}, p["latents"],
                                     train=True, mutable=["batch_stats"])
            return out, None

        params = {"generator": gen_params["params"], "latents": noise}
    x, t_logits, metrics, observed, grad_sum, contrast_out = synthesize(
        hp, teacher, state, make_images, params, targets, views, local_views, jax.random.fold_in(init_rng, 1))
    if contrast_out is not None:  # every replica adds the global batch's features: the bank stays replicated
        head_state, local, global_ = contrast_out
        gather = lambda a: parallel.gather_replicated(a, AXIS)
        state = state.replace(head=head_state, bank=contrastive.bank_add(state.bank, gather(local), gather(global_)))
    if hp.synthesizer == "meta_generator":  # first-order MAML: the inner gradients, summed, one outer step
        state = state.replace(generator=state.generator.apply_gradients(grads=grad_sum["generator"]))
    if hp.bn_momentum:  # once per round, from the last inner step's statistics
        momentum = jnp.where(state.step > 0, hp.bn_momentum, 0.0)
        state = state.replace(bn_running=jax.lax.stop_gradient(objectives.blend_statistics(observed, state.bn_running, momentum)))
    state = state.replace(pool=synthesis.add(state.pool, state.step, x, t_logits))
    if distil:
        state, s_metrics = jax.lax.scan(lambda st, sl: student_step(hp, st, sl), state, slots)
        metrics.update(jax.tree.map(lambda m: m[-1], s_metrics))
    return state.replace(step=state.step + 1), metrics


def state_spec(hp: InversionHyper) -> InversionState:
    P = jax.sharding.PartitionSpec
    return InversionState(step=P(), student=P(), pool=synthesis.POOL_SPEC,
                          generator=P() if hp.synthesizer == "meta_generator" else None,
                          bn_running=P() if hp.bn_momentum else None,
                          head=P() if hp.contrasting else None, bank=P() if hp.contrasting else None)


def make_round(teacher_model, generator, hp: InversionHyper, image_shape, mesh, distil: bool = True):
    """Jitted ``(state, teacher_vars, rng) -> (state, metrics)``: one round, data-parallel over
    ``mesh``; noise, targets, views and pool slots are drawn for the global batch."""
    parallel.check_batch_size(hp.batch_size, mesh)
    spec, sharded_steps = state_spec(hp), jax.sharding.PartitionSpec(None, AXIS)
    per_replica = lambda st, tv, noise, targets, views, local_views, slots, init_rng: round_step(
        hp, teacher_model, generator, st, tv, noise, targets, views, local_views, slots, init_rng, distil)
    sharded = parallel.data_parallel(
        per_replica, mesh, out_specs=(spec, parallel.REPLICATED),
        in_specs=(spec, parallel.REPLICATED, parallel.SHARDED, parallel.SHARDED,
                  sharded_steps if hp.augment_views else None, sharded_steps if hp.contrasting else None,
                  sharded_steps, parallel.REPLICATED))

    def round_fn(state: InversionState, teacher_vars, rng):
        key = jax.random.fold_in(rng, state.step)
        k_noise, k_targets, k_views, k_slots, k_init = jax.random.split(key, 5)
        shape = image_shape if hp.synthesizer == "pixels" else (hp.latent_dim,)
        noise = jax.random.normal(k_noise, (hp.batch_size, *shape))
        targets = jax.random.randint(k_targets, (hp.batch_size,), 0, hp.num_classes)
        views = augment.draw(k_views, VIEW, (hp.synthesis_steps, hp.batch_size)) if hp.augment_views else None
        local_views = augment.draw(jax.random.fold_in(k_views, 1), local_view(hp), (hp.synthesis_steps, hp.batch_size),
                                   image_shape[0]) if hp.contrasting else None
        filled = jnp.minimum(state.step + 1, hp.pool_size)
        slots = synthesis.draw_slots(k_slots, filled, hp.student_steps, hp.batch_size)
        return sharded(state, teacher_vars, noise, targets, views, local_views, slots, k_init)

    return jax.jit(round_fn, donate_argnums=0)
