"""HiDFD: a few real images and a teacher-guided GAN, then the classifier-sharing student."""

import jax
import jax.numpy as jnp
import optax

from ddad_jax import config_fields, data, models, parallel, state as state_lib, synthesis, workdir as workdir_lib
from ddad_jax import teacher as teacher_lib
from ddad_jax.trainers import sizes
from ddad_jax.trainers.common import Run, dataset_spec, eval_set as make_eval_set, grid_sampler, identity, make_generator, train_subset
from ddad_jax.errors import UserError
from ddad_jax.evaluation import evaluate
from ddad_jax.methods import hidfd
from ddad_jax.models import gan as gan_models


def real_per_batch(config, num_real: int, num_devices: int) -> int:
    """Data inflation: the real images' share of a student batch, ``inflation * R`` real
    against ``synthetic_images`` generated ones, rounded to a multiple of the device count
    (at least one per device, at most all but one per device)."""
    share = config.inflation * num_real / max(config.inflation * num_real + config.synthetic_images, 1)
    per_device = round(share * config.batch_size / num_devices)
    return min(max(per_device, 1), config.batch_size // num_devices - 1) * num_devices


def build_hidfd(config) -> Run:
    spec = dataset_spec(config)  # preprocessed as the teacher's card says
    mesh = parallel.make_mesh(config.num_devices or None)
    parallel.check_batch_size(config.batch_size, mesh)
    if config.batch_size < 2 * mesh.size:
        raise UserError(f"batch_size must be at least {2 * mesh.size} (a real and a generated image per device)")
    # every host reads the whole split: the few real images are the same whatever the number of hosts
    train_x, train_y = data.load_split(spec, "train", config.data_dir or None, shard_index=0, shard_count=1)
    keep = train_subset(config, spec, train_y)
    train_x, train_y = train_x[keep], train_y[keep]  # the few real images: nothing else of the split is kept
    image_shape = (spec.image_size, spec.image_size, spec.channels)
    sizes.check_int32(**{"gan_iterations + student_iterations": config.gan_iterations + config.student_iterations})
    classifiers = {f"{role} {name}": models.get_classifier(name, spec.num_classes)
                   for role, name in (("teacher", config.teacher), ("student", config.student))}
    sizes.check_step_memory(config.batch_size, mesh, {
        **{name: (model, image_shape, {}) for name, model in classifiers.items()},
        "the generator": (make_generator(config, spec),
                          (config.latent_dim + spec.num_classes,), {"train": True})})
    eval_set = make_eval_set(config, spec, mesh, evaluated=classifiers)
    teacher_model, teacher_vars, _ = teacher_lib.load_teacher(config.teacher_dir, config.teacher, config.dataset, spec=spec)
    teacher_acc = evaluate(teacher_model, teacher_vars, eval_set)
    print(f"[hidfd] teacher {config.teacher} from {config.teacher_dir}: test accuracy {teacher_acc:.4f}; "
          f"{len(train_x)} real images", flush=True)
    example = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))
    feature_dim = jax.eval_shape(lambda x: teacher_model.clone(penultimate=True).apply(teacher_vars, x), example).shape[-1]
    real_count = real_per_batch(config, len(train_x), mesh.size)
    hp = config_fields.from_config(hidfd.HiDFDHyper, config, real_per_batch=real_count, num_classes=spec.num_classes)
    rng = jax.random.key(config.seed)
    generator = make_generator(config, spec, bn_axis_name=parallel.BATCH_AXIS)
    discriminator = gan_models.Discriminator(spec.num_classes, feature_dim, config.discriminator_width)
    student = models.get_classifier(config.student, spec.num_classes, bn_axis_name=parallel.BATCH_AXIS)
    backbone = student.clone(penultimate=True)
    projector = gan_models.Projector(feature_dim)
    gan_tx = lambda: state_lib.make_optimizer("adam", optax.constant_schedule(config.gan_lr), b1=0.0, b2=0.999)
    schedule = state_lib.make_schedule(config.schedule, config.learning_rate, config.student_iterations)
    student_tx = lambda: state_lib.make_optimizer(config.optimizer, schedule, config.momentum, config.weight_decay)
    g = state_lib.create_state(generator.clone(bn_axis_name=None), gan_tx(), jax.random.fold_in(rng, 1),
                               jnp.zeros((2, hp.latent_dim + spec.num_classes)))
    d = state_lib.create_state(discriminator, gan_tx(), jax.random.fold_in(rng, 2), example)
    s = state_lib.create_state(student.clone(bn_axis_name=None), student_tx(), jax.random.fold_in(rng, 3), example)
    p = state_lib.create_state(projector, student_tx(), jax.random.fold_in(rng, 4), jnp.zeros((1, backbone.apply(
        {"params": s.params, "batch_stats": s.batch_stats} if s.batch_stats else {"params": s.params}, example).shape[-1])))
    state = hidfd.HiDFDState(step=jnp.zeros((), jnp.int32), generator=g.replace(apply_fn=generator.apply),
                             discriminator=d, student=s.replace(apply_fn=backbone.apply), projector=p,
                             class_counts=jnp.ones((spec.num_classes,), jnp.float32))
    gan_iteration, student_iteration = hidfd.make_steps(hp, teacher_model, spec, mesh)
    shipped = gan_models.ClassifierSharing(backbone.clone(bn_axis_name=None), projector, spec.num_classes)
    teacher_head = jax.device_get(teacher_vars["params"][teacher_model.head])
    teacher_vars = parallel.replicate(teacher_vars, mesh)
    total = config.gan_iterations + config.student_iterations

    def step(n, state):
        if n <= config.gan_iterations:
            idx = data.cycled_batch(len(train_x), config.batch_size, config.seed, n - 1)
            idx = idx[parallel.process_rows(config.batch_size, mesh)]  # this host's part of the batch
            return gan_iteration(state, teacher_vars, parallel.shard_batch(train_x[idx], mesh),
                                 parallel.shard_batch(train_y[idx], mesh), rng)
        idx = data.cycled_batch(len(train_x), real_count, config.seed + 1, n - 1 - config.gan_iterations)
        idx = idx[parallel.process_rows(real_count, mesh)]
        return student_iteration(state, teacher_vars, parallel.shard_batch(train_x[idx], mesh), rng)

    def shipped_variables(s):
        v = {"params": {"backbone": s.student.params, "projector": s.projector.params, "teacher_head": teacher_head}}
        if s.student.batch_stats:
            v["batch_stats"] = {"backbone": s.student.batch_stats}
        return v

    grid = config.sample_grid
    sample_z = synthesis.with_classes(jax.random.normal(jax.random.fold_in(rng, 5), (grid, hp.latent_dim)),
                                      jnp.arange(grid) % spec.num_classes, spec.num_classes) if grid else None

    def summarize(state, last_eval, wall_s):
        return {"method": "hidfd", "dataset": config.dataset, "teacher": config.teacher, "teacher_acc": teacher_acc,
                "student": config.student, "student_acc": last_eval["test/student_accuracy"],
                "real_images": len(train_x), "real_per_batch": real_count, "gan_iterations": config.gan_iterations,
                "student_iterations": config.student_iterations, "wall_s": wall_s, "devices": mesh.size}

    return Run(
        name="hidfd", state=state, place=lambda st: parallel.replicate(st, mesh), step=step, total_steps=total,
        steps_per_epoch=config.iters_per_epoch,
        identity=identity(config, teacher_fingerprint=workdir_lib.variables_fingerprint(jax.device_get(teacher_vars))),
        evaluate=lambda st: {"test/student_accuracy": evaluate(shipped, shipped_variables(st), eval_set)},
        summarize=summarize, phase=lambda n: "gan " if n <= config.gan_iterations else "student ",
        report=lambda sm: f"student {sm['student']} (classifier-sharing) test accuracy {sm['student_acc']:.4f} "
                          f"from {sm['real_images']} real images (teacher {sm['teacher']} {sm['teacher_acc']:.4f})",
        sample=grid_sampler(generator, teacher_model, teacher_vars, spec, sample_z) if grid else None,
        class_names=spec.class_names,
        log_every=config.log_every, checkpoint_every=config.checkpoint_every)
