"""DeepInversion, CMI and Fast: each round synthesises a batch by an inner optimisation,
pools it, and trains the student on the pool (``methods/inversion.py``)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ddad_jax import config_fields, data, models, objectives, parallel, state as state_lib, synthesis
from ddad_jax.errors import UserError
from ddad_jax.methods import inversion
from ddad_jax.models.bn_stats import INSTANCE, apply_with_bn_stats, instance_features
from ddad_jax.models.gan import ContrastHead
from ddad_jax.objectives import contrastive
from ddad_jax.trainers import distillation, sizes
from ddad_jax.trainers.common import Run, kd_params, make_generator, resolved_pool_size, student_result, teacher_result
from ddad_jax.trainers.ddad import bn_statistics_zeros


def inversion_hyper(config, spec) -> inversion.InversionHyper:
    """The declared fields read from ``config``, the rest derived."""
    low = tuple((0.0 - m) / s for m, s in zip(spec.mean, spec.std))
    high = tuple((1.0 - m) / s for m, s in zip(spec.mean, spec.std))
    return config_fields.from_config(
        inversion.InversionHyper, config, generator_terms=objectives.parse_terms(config.generator_terms),
        kd=kd_params(config), num_classes=spec.num_classes, pool_size=resolved_pool_size(config),
        pixel_bounds=(low, high) if config.synthesizer == "pixels" else None)


def place(state, hp, mesh):
    return parallel.put(state, mesh, inversion.state_spec(hp))


def build_inversion(config) -> Run:
    shared = distillation.setup(config, config.method)
    spec, mesh, teacher_model, teacher_vars = shared.spec, shared.mesh, shared.teacher_model, shared.teacher_vars
    hp = inversion_hyper(config, spec)
    image_shape = (spec.image_size, spec.image_size, spec.channels)
    generator = make_generator(config, spec, bn_axis_name=parallel.BATCH_AXIS)
    student = models.get_classifier(config.student, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS)
    networks = {f"teacher {config.teacher}": (teacher_model.clone(bn_axis_name=None), image_shape, {}),
                f"student {config.student}": (student.clone(bn_axis_name=None), image_shape, {})}
    if config.synthesizer != "pixels":
        networks["the generator"] = (generator.clone(bn_axis_name=None), (config.latent_dim,), {"train": True})
    sizes.check_step_memory(config.batch_size, mesh, networks, extra_bytes_per_device=sizes.pool_bytes_per_device(
        hp.pool_size, config.batch_size, image_shape, spec.num_classes, mesh.size))
    rng = jax.random.key(config.seed)
    rounds = config.num_epochs * config.iters_per_epoch
    distil_rounds = rounds - config.warmup_rounds
    if distil_rounds < 1:
        raise UserError(f"warmup_rounds={config.warmup_rounds} leaves no round for the student "
                        f"(num_epochs * iters_per_epoch = {rounds})")
    schedule = state_lib.make_schedule(config.lr_schedule, config.student_lr,
                                       distil_rounds * config.student_steps_per_round)
    s_tx = state_lib.make_optimizer(config.student_optimizer, schedule, config.student_momentum,
                                    config.student_weight_decay)
    s = state_lib.create_state(student.clone(bn_axis_name=None), s_tx, jax.random.fold_in(rng, 2),
                               jnp.zeros((1, *image_shape)))
    g = None
    if inversion.SYNTHESIZERS[config.synthesizer].persistent_generator:  # the outer Adam (Fast: lr_g * g_steps, betas (0.5, 0.999))
        g_tx = state_lib.make_optimizer("adam", state_lib.make_schedule("constant", config.generator_lr, 1), b1=0.5)
        g = state_lib.create_state(generator.clone(bn_axis_name=None), g_tx, jax.random.fold_in(rng, 1),
                                   jnp.zeros((2, config.latent_dim)))
        g = g.replace(apply_fn=generator.apply)
    state = inversion.InversionState(
        step=jnp.zeros((), jnp.int32), student=s.replace(apply_fn=student.apply),
        pool=synthesis.init_pool(hp.pool_size, config.batch_size, image_shape, spec.num_classes), generator=g)
    if hp.bn_momentum:  # the running blend of past rounds' statistics: set by the first round
        state = state.replace(bn_running=bn_statistics_zeros(teacher_model, teacher_vars, image_shape))
    if hp.contrasting:  # CMI's head (its own Adam at the generator's rate, torch's betas) and memory bank
        dim = _instance_dim(teacher_model, teacher_vars, image_shape)
        h_tx = state_lib.make_optimizer("adam", state_lib.make_schedule("constant", config.synthesis_lr, 1))
        head = state_lib.create_state(ContrastHead(config.contrast_head_dim), h_tx, jax.random.fold_in(rng, 3),
                                      jnp.zeros((1, dim)))
        state = state.replace(head=head, bank=contrastive.init_bank(config.contrast_bank_size, dim))
    warm_terms = tuple(t for t in hp.generator_terms if t.name not in objectives.NEEDS_STUDENT)
    warm_hp = dataclasses.replace(hp, generator_terms=warm_terms or hp.generator_terms)
    round_fn = inversion.make_round(teacher_model, generator, hp, image_shape, mesh)
    warmup_fn = inversion.make_round(teacher_model, generator, warm_hp, image_shape, mesh, distil=False) \
        if config.warmup_rounds else None
    teacher_vars = parallel.replicate(teacher_vars, mesh)

    def summarize(state, last_eval, wall_s):
        filled = int(min(int(state.step), hp.pool_size))
        return distillation.summary(
            shared, last_eval, wall_s, rounds=rounds, synthetic_images=int(state.step) * config.batch_size,
            pool_images=filled * config.batch_size, synthesizer=config.synthesizer)

    agree = jax.jit(lambda s_vars, x, t_logits: jnp.mean(
        jnp.argmax(student.clone(bn_axis_name=None).apply(s_vars, x, train=False), -1) == jnp.argmax(t_logits, -1)))

    def pool_agreement(state):
        """Without a test split: the student's top-1 agreement with the teacher on the latest
        synthesised batch (no generator to draw a fixed set from; the pool keeps the teacher's logits)."""
        slot = (int(state.step) - 1) % hp.pool_size
        return float(agree(state_lib.variables_of(state.student), state.pool.images[slot], state.pool.logits[slot]))

    def sample(state):
        slot = (int(state.step) - 1) % hp.pool_size  # the latest synthesised batch
        images = parallel.to_host(state.pool.images[slot][:config.sample_grid])  # sharded over processes too
        labels = np.argmax(parallel.to_host(state.pool.logits[slot][:config.sample_grid]), -1)
        return np.asarray(data.denormalize(jnp.asarray(images), spec)), labels

    return distillation.run(
        shared, state=state, place=lambda st: place(st, hp, mesh),
        step=lambda n, st: (warmup_fn if n <= config.warmup_rounds else round_fn)(st, teacher_vars, rng),
        total_steps=rounds, student_eval=student, agreement=pool_agreement, summarize=summarize,
        phase=lambda n: "warm-up " if n <= config.warmup_rounds else "",
        report=lambda sm: f"student {sm['student']} {student_result(sm)} from "
                          f"{sm['synthetic_images']} synthetic images (teacher {teacher_result(sm)})",
        sample=sample if config.sample_grid else None)


def _instance_dim(teacher_model, teacher_vars, image_shape) -> int:
    """The width of the teacher's instance features (its BatchNorm inputs' channels, summed)."""
    def features(x):
        _, _, extra = apply_with_bn_stats(teacher_model.clone(bn_axis_name=None), teacher_vars, x,
                                          extra_collections=(INSTANCE,))
        return instance_features(extra[INSTANCE])
    return int(jax.eval_shape(features, jnp.zeros((2, *image_shape))).shape[-1])
