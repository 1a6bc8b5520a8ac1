"""DDAD: the frozen teacher, the generator and student states, the jitted iteration and fine-tuning tail."""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from ddad_jax import config_fields, models, objectives, parallel, state as state_lib, synthesis
from ddad_jax.export import card as card_lib
from ddad_jax.methods import ddad
from ddad_jax.trainers import distillation, sizes
from ddad_jax.trainers.common import (AGREEMENT_BATCHES, Run, compute_dtype, generator_agreement, generator_arch,
                                      grid_sampler, kd_params, make_generator, resolved_pool_size, student_result,
                                      teacher_result)


def hyper(config, spec) -> ddad.DDADHyper:
    """DDAD's hyperparameters: the declared fields read from ``config``, the rest derived."""
    terms = objectives.parse_terms(config.generator_terms)
    return config_fields.from_config(
        ddad.DDADHyper, config, generator_terms=terms, kd=kd_params(config), pool_size=resolved_pool_size(config),
        num_classes=spec.num_classes if objectives.term_names(terms) & objectives.NEEDS_TARGETS else 0,
        pool_normalization=(tuple(spec.mean), tuple(spec.std)) if config.get("pool_pixels", False) else None)


def student_schedule(config) -> optax.Schedule:
    """The student's learning rate per update: ``lr_schedule`` over the adversarial epochs,
    then, over ``finetune_epochs``, a cosine from ``finetune_lr`` to 0."""
    per_epoch = config.iters_per_epoch * config.student_steps_per_generator_step
    main = state_lib.make_schedule(config.lr_schedule, config.student_lr, config.num_epochs * per_epoch,
                                   [m * per_epoch for m in config.lr_milestones], config.lr_gamma)
    if not config.finetune_epochs:
        return main
    tail = optax.cosine_decay_schedule(config.finetune_lr, config.finetune_epochs * per_epoch)
    return optax.join_schedules([main, tail], [config.num_epochs * per_epoch])


def generator_schedule(config) -> optax.Schedule:
    per_epoch = config.iters_per_epoch
    return state_lib.make_schedule(config.generator_lr_schedule or config.lr_schedule, config.generator_lr,
                                   config.num_epochs * per_epoch, [m * per_epoch for m in config.lr_milestones],
                                   config.lr_gamma)


def bn_statistics_zeros(teacher_model, teacher_vars, image_shape):
    """Zeros shaped like the teacher's BN-input statistics (what a running blend of them keeps)."""
    from ddad_jax.models.bn_stats import apply_with_bn_stats  # pylint: disable=import-outside-toplevel
    stats = jax.eval_shape(lambda x: apply_with_bn_stats(teacher_model.clone(bn_axis_name=None), teacher_vars, x)[1],
                           jnp.zeros((2, *image_shape)))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats)


def create_ddad_state(config, hp: ddad.DDADHyper, spec, generator, student, rng,
                      teacher_model=None, teacher_vars=None) -> ddad.DDADState:
    """Fresh generator and student states (initialised outside the data-parallel map, where
    the ``batch`` axis does not exist yet) and an empty pool."""
    g_tx = state_lib.make_optimizer("adam", generator_schedule(config))
    s_tx = state_lib.make_optimizer(config.student_optimizer, student_schedule(config),
                                    config.student_momentum, config.student_weight_decay)
    image = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))
    g = state_lib.create_state(generator.clone(bn_axis_name=None), g_tx, jax.random.fold_in(rng, 1),
                               jnp.zeros((2, hp.latent_dim + hp.num_classes)))
    s = state_lib.create_state(student.clone(bn_axis_name=None), s_tx, jax.random.fold_in(rng, 2), image)
    image_shape = (spec.image_size, spec.image_size, spec.channels)
    pool = synthesis.init_pool(hp.pool_size, hp.batch_size, image_shape, spec.num_classes,
                               pixels=hp.pool_normalization is not None)
    state = ddad.DDADState(step=jnp.zeros((), jnp.int32), generator=g.replace(apply_fn=generator.apply),
                           student=s.replace(apply_fn=student.apply), pool=pool)
    if hp.bn_momentum:  # the running blend's shapes (zeros; the first batch sets it)
        state = state.replace(bn_running=bn_statistics_zeros(teacher_model, teacher_vars, image_shape))
    return state


def place_ddad_state(state: ddad.DDADState, hp: ddad.DDADHyper, mesh) -> ddad.DDADState:
    """A host/checkpoint state on ``mesh`` with the layout ``ddad.make_iteration`` expects."""
    return parallel.put(state, mesh, ddad.state_spec(hp))


def build_ddad(config) -> Run:
    method = config.get("method", "ddad")  # DAFL, DFAD and DFQ are DDAD-shaped: a generator step, then the student
    shared = distillation.setup(config, method)
    spec, mesh, teacher_model, teacher_vars = shared.spec, shared.mesh, shared.teacher_model, shared.teacher_vars
    hp = hyper(config, spec)

    dtype = compute_dtype(config)
    generator = make_generator(config, spec, bn_axis_name=parallel.BATCH_AXIS, dtype=dtype)
    student = models.get_classifier(config.student, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS, dtype=dtype)
    student_f32 = student.clone(dtype=jnp.float32)  # evaluation always in float32
    image_shape = (spec.image_size, spec.image_size, spec.channels)
    adversarial_total = config.num_epochs * config.iters_per_epoch
    total = (config.num_epochs + config.finetune_epochs) * config.iters_per_epoch
    sizes.check_int32(**{"(num_epochs + finetune_epochs) * iters_per_epoch": total})
    sizes.check_step_memory(hp.batch_size, mesh, {
        f"teacher {config.teacher}": (teacher_model.clone(bn_axis_name=None), image_shape, {}),
        f"student {config.student}": (student.clone(bn_axis_name=None), image_shape, {}),
        "the generator": (generator.clone(bn_axis_name=None), (hp.latent_dim + hp.num_classes,), {"train": True})},
        extra_bytes_per_device=sizes.pool_bytes_per_device(hp.pool_size, hp.batch_size, image_shape, spec.num_classes,
                                                           mesh.size))
    rng = jax.random.key(config.seed)
    state = create_ddad_state(config, hp, spec, generator, student, rng, teacher_model, teacher_vars)
    teacher_vars = parallel.replicate(teacher_vars, mesh)
    iteration = ddad.make_iteration(teacher_model.clone(dtype=dtype), hp, mesh)
    finetune = ddad.make_iteration(teacher_model.clone(dtype=dtype), dataclasses.replace(
        hp, student_objective=config.finetune_objective), mesh, adversarial=False) if config.finetune_epochs else None

    sample_z, _ = synthesis.draw_latents(jax.random.fold_in(rng, 3), hp.latent_dim, 0, (config.sample_grid,))
    if hp.num_classes:  # a conditional generator's grid goes through the classes in order
        sample_z = synthesis.with_classes(sample_z, jnp.arange(config.sample_grid) % hp.num_classes, hp.num_classes)
    agreement = None
    if shared.eval_set is None:  # AGREEMENT_BATCHES generator batches from latents drawn once
        agree_z, _ = synthesis.draw_latents(jax.random.fold_in(rng, 4), hp.latent_dim, 0,
                                            (AGREEMENT_BATCHES, config.batch_size))
        if hp.num_classes:
            classes = jnp.broadcast_to(jnp.arange(config.batch_size) % hp.num_classes, agree_z.shape[:2])
            agree_z = synthesis.with_classes(agree_z, classes, hp.num_classes)
        agreement = generator_agreement(generator, teacher_model, teacher_vars, student_f32, agree_z)

    def summarize(state, last_eval, wall_s):
        done = int(state.step)  # fewer than total_steps when a time budget stopped the run
        adversarial_done, finetune_done = min(done, adversarial_total), max(0, done - adversarial_total)
        k = hp.student_steps  # images the generator made: its own batch, then the student's fresh ones
        synthetic = hp.batch_size * (adversarial_done * (1 + k) + finetune_done * k)
        return distillation.summary(
            shared, last_eval, wall_s, synthetic_images=synthetic, teacher_acc_at_training=shared.teacher_meta.get("test_acc"),
            iterations=adversarial_total, finetune_iterations=total - adversarial_total,
            student_objective=hp.student_objective, pool_size=hp.pool_size)

    return distillation.run(
        shared, state=state, place=lambda st: place_ddad_state(st, hp, mesh),
        step=lambda n, st: (iteration if n <= adversarial_total else finetune)(st, teacher_vars, rng),
        total_steps=total, student_eval=student_f32, agreement=agreement, summarize=summarize,
        report=lambda sm: f"student {sm['student']} {student_result(sm)} (teacher {teacher_result(sm)})",
        phase=lambda n: "" if n <= adversarial_total else "fine-tune ",
        sample=grid_sampler(generator, teacher_model, teacher_vars, spec, sample_z) if config.sample_grid else None,
        # what the export rebuilds the generator from (its int8 calibration images, drawn as here)
        generator_card=card_lib.generator_entry(config.generator_channels, generator_arch(config), image_shape,
                                                hp.latent_dim, hp.num_classes, hp.balanced_targets, hp.batch_size))
