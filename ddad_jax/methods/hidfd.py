"""HiDFD (hybrid data-free distillation, arXiv 2412.13525): a few real images plus a
teacher-guided GAN, as pure per-replica functions.

Two stages, one after the other (as in the reference code):

1. **GAN** (``gan_step``): a class-conditional generator against a discriminator that sees
   the few real images. Discriminator: hinge + ADC-GAN auxiliary classifier + feature
   integration (its feature head regresses the frozen teacher's features of real and
   generated images). Generator: hinge + ADC + the teacher's class balance, weighted by
   category-frequency smoothing (classes the teacher rarely sees in generated images weigh
   more; the counts are kept in the state).
2. **Student** (``student_step``): data inflation -- each batch blends the real images
   (repeated ``inflation`` times) with freshly generated ones in proportion -- and
   classifier-sharing feature alignment: the student's penultimate features, through a
   projector, match the teacher's (MSE), and at test time pass through the teacher's own
   classifier (``models.gan.ClassifierSharing``).

The teacher is frozen (inference mode). Losses are ``pmean``'d over ``parallel.BATCH_AXIS``.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp

from ddad_jax import data, parallel, synthesis
from ddad_jax.config_fields import field
from ddad_jax.models.features import apply_with_features
from ddad_jax.objectives import gan as gan_objectives
from ddad_jax.state import TrainState, forward

AXIS = parallel.BATCH_AXIS


@flax.struct.dataclass
class HiDFDState:
    step: jnp.ndarray
    generator: TrainState
    discriminator: TrainState
    student: TrainState  # its penultimate features are what is trained
    projector: TrainState
    class_counts: jnp.ndarray  # (K,) smoothed counts of the teacher's classes in generated images


@dataclasses.dataclass(frozen=True)
class HiDFDHyper:
    """HiDFD's hyperparameters; each field read from a config is declared here once, with its
    range (``config_fields``); the others the trainer derives."""
    batch_size: int = field(64, kind=int, low=1)  # global, GAN and student stages
    real_per_batch: int = 32  # student stage: real images in each batch (data inflation), the rest generated
    latent_dim: int = field(100, kind=int, low=1)
    num_classes: int = 10
    adc_weight: float = field(1.0, low=0.0)
    feature_weight: float = field(0.1, low=0.0)  # feature integration (reference code: 0.1)
    balance_weight: float = field(0.1, low=0.0)  # the teacher's weighted class balance (reference code: 0.1)
    count_momentum: float = field(0.5, low=0.0, high=1.0)  # category-frequency smoothing of the class counts
    effective_beta: float = field(0.99, low=0.0, high=0.999999)  # class-balanced weights' beta


def _teacher(model, variables, x):
    logits, feats, _ = apply_with_features(model, variables, x)
    return jax.lax.stop_gradient(logits), jax.lax.stop_gradient(feats["penultimate"])


def _generate(g: TrainState, params, z, labels, num_classes):
    return forward(g, params, synthesis.with_classes(z, labels, num_classes), name="generator")


def gan_step(hp: HiDFDHyper, teacher_model, teacher_vars, spec: data.DatasetSpec, state: HiDFDState,
             real_images, real_labels, z_d, z_g, labels_g):
    """One discriminator step (real batch vs fakes of the same classes), then one generator
    step (fakes of drawn classes ``labels_g``); returns (state, metrics)."""
    g, d = state.generator, state.discriminator
    real = data.normalize(real_images, spec)
    t_real = _teacher(teacher_model, teacher_vars, real)[1]
    fake = jax.lax.stop_gradient(_generate(g, g.params, z_d, real_labels, hp.num_classes)[0])
    t_fake = _teacher(teacher_model, teacher_vars, fake)[1]

    def d_loss(params):
        r_adv, r_aux, r_feat = d.apply_fn({"params": params}, real)
        f_adv, f_aux, f_feat = d.apply_fn({"params": params}, fake)
        hinge = gan_objectives.hinge_discriminator(r_adv, f_adv)
        adc = gan_objectives.adc_discriminator(r_aux, real_labels, f_aux, real_labels)
        integration = gan_objectives.feature_integration(r_feat, f_feat, t_real, t_fake)
        loss = hinge + hp.adc_weight * adc + hp.feature_weight * integration
        return jax.lax.pmean(loss, AXIS), jax.lax.pmean({"disc/hinge": hinge, "disc/adc": adc,
                                                         "disc/feature_integration": integration}, AXIS)

    (loss, d_metrics), grads = jax.value_and_grad(d_loss, has_aux=True)(d.params)
    d = d.apply_gradients(grads=grads)
    weights = gan_objectives.effective_number_weights(state.class_counts, hp.effective_beta)

    def g_loss(params):
        x, g_stats = _generate(g, params, z_g, labels_g, hp.num_classes)
        adv, aux, _ = d.apply_fn({"params": d.params}, x)
        t_logits = teacher_model.apply(teacher_vars, x)  # the balance term's gradient goes through the teacher
        mean_probs = jax.lax.pmean(jnp.mean(jax.nn.softmax(t_logits), 0), AXIS)
        hinge = gan_objectives.hinge_generator(adv)
        adc = gan_objectives.adc_generator(aux, labels_g)
        balance = gan_objectives.weighted_balance(mean_probs, weights)
        loss = jax.lax.pmean(hinge + hp.adc_weight * adc, AXIS) + hp.balance_weight * balance
        return loss, (g_stats, t_logits, {"gen/hinge": jax.lax.pmean(hinge, AXIS), "gen/balance": balance})

    (g_total, (g_stats, t_logits, g_metrics)), grads = jax.value_and_grad(g_loss, has_aux=True)(g.params)
    g = g.apply_gradients(grads=grads, batch_stats=g_stats)
    predicted = jnp.argmax(t_logits, -1)
    batch_counts = jax.lax.psum(jnp.bincount(predicted, length=hp.num_classes), AXIS).astype(jnp.float32)
    counts = gan_objectives.smooth_counts(state.class_counts, batch_counts, hp.count_momentum)
    agreement = jax.lax.pmean(jnp.mean(predicted == labels_g), AXIS)
    state = state.replace(generator=g, discriminator=d, class_counts=counts, step=state.step + 1)
    return state, {"disc/loss": loss, "gen/loss": g_total, "gen/teacher_agreement": agreement,
                   **d_metrics, **g_metrics}


def student_step(hp: HiDFDHyper, teacher_model, teacher_vars, spec: data.DatasetSpec, state: HiDFDState,
                 real_images, z, labels):
    """One student (+ projector) step on real images blended with generated ones."""
    g, s, p = state.generator, state.student, state.projector
    fake = jax.lax.stop_gradient(_generate(g, g.params, z, labels, hp.num_classes)[0])
    x = jnp.concatenate([data.normalize(real_images, spec), fake])
    t_feats = _teacher(teacher_model, teacher_vars, x)[1]

    def loss_fn(params):
        s_params, p_params = params
        feats, s_stats = forward(s, s_params, x, name="student")
        loss = gan_objectives.feature_alignment(p.apply_fn({"params": p_params}, feats), t_feats)
        return jax.lax.pmean(loss, AXIS), s_stats

    (loss, s_stats), (s_grads, p_grads) = jax.value_and_grad(loss_fn, has_aux=True)((s.params, p.params))
    state = state.replace(student=s.apply_gradients(grads=s_grads, batch_stats=s_stats),
                          projector=p.apply_gradients(grads=p_grads), step=state.step + 1)
    return state, {"student/feature_alignment": loss}


def make_steps(hp: HiDFDHyper, teacher_model, spec: data.DatasetSpec, mesh):
    """Jitted ``gan(state, teacher_vars, images, labels, rng)`` and ``student(state,
    teacher_vars, images, rng)``, data-parallel over ``mesh``, the state donated; latents and
    classes are drawn for the global batch (results do not depend on the device count)."""
    R, S = parallel.REPLICATED, parallel.SHARDED
    gan = parallel.data_parallel(lambda st, tv, im, lb, zd, zg, yg: gan_step(hp, teacher_model, tv, spec, st, im, lb,
                                                                             zd, zg, yg),
                                 mesh, in_specs=(R, R, S, S, S, S, S), out_specs=(R, R))
    student = parallel.data_parallel(lambda st, tv, im, z, y: student_step(hp, teacher_model, tv, spec, st, im, z, y),
                                     mesh, in_specs=(R, R, S, S, S), out_specs=(R, R))

    def gan_iteration(state, teacher_vars, images, labels, rng):
        key = jax.random.fold_in(rng, state.step)
        k_d, k_g, k_y = jax.random.split(key, 3)
        z_d = jax.random.normal(k_d, (hp.batch_size, hp.latent_dim))
        z_g = jax.random.normal(k_g, (hp.batch_size, hp.latent_dim))
        labels_g = jax.random.randint(k_y, (hp.batch_size,), 0, hp.num_classes)
        return gan(state, teacher_vars, images, labels, z_d, z_g, labels_g)

    def student_iteration(state, teacher_vars, images, rng):
        key = jax.random.fold_in(rng, state.step)
        n = hp.batch_size - hp.real_per_batch
        z = jax.random.normal(key, (n, hp.latent_dim))
        labels = jnp.arange(n) % hp.num_classes  # every class equally often
        return student(state, teacher_vars, images, z, labels)

    return jax.jit(gan_iteration, donate_argnums=0), jax.jit(student_iteration, donate_argnums=0)
