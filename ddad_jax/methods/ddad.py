"""DDAD: Dual Discriminator Adversarial Distillation.

One iteration = one generator update, then ``student_steps`` student updates:

* generator: minimise ``bn_weight * L_BN - adv_weight * D(student, teacher)`` on its images
  (plus, optionally, DAFL's one-hot and information-entropy terms, or, with a
  class-conditional generator, ``class_weight`` x the teacher's cross-entropy against the
  class each image was generated for),
  where L_BN compares the batch statistics entering each teacher BatchNorm layer with the
  teacher's running statistics (discriminator 1), and D is the teacher-student
  discrepancy (discriminator 2, the student; L1 between logits as in DFAD, or KL);
* student: minimise ``D(student, teacher)`` (or another discrepancy,
  ``student_discrepancy``: e.g. KL for the student while the generator plays on L1) on
  fresh generated images, optionally augmented
  (flip, shift, mixup; ``augment``) before the teacher labels them, plus, with
  ``replay_slots``, a batch replayed from a memory of past generated batches (``replay``).

With ``student_ema`` > 0 the state also keeps an exponential moving average of the
student's variables (parameters and BatchNorm statistics), updated once an iteration; the
training loop evaluates and reports that average, which smooths the oscillation that the
moving generator puts into the student.

The teacher is frozen: it is an argument, never part of the state, always in inference
mode. Everything here is per-replica code for ``parallel.data_parallel``: statistics and
losses are reduced over ``parallel.BATCH_AXIS``, so they are those of the global batch.
"""

import dataclasses
import functools
from typing import Any, Dict, Optional, Tuple

import chex
import flax
import jax
import jax.numpy as jnp
import optax

from ddad_jax import augment, backends, losses, parallel, state as state_lib
from ddad_jax.methods import replay
from ddad_jax.models.bn_stats import apply_with_bn_stats
from ddad_jax.state import TrainState

AXIS = parallel.BATCH_AXIS


@flax.struct.dataclass
class DDADState:
    step: jnp.ndarray  # iterations done
    generator: TrainState
    student: TrainState
    memory: Optional[replay.Memory] = None  # past generated batches (replay_slots > 0)
    student_ema: Optional[Any] = None  # moving average of the student's variables (student_ema > 0)


@dataclasses.dataclass(frozen=True)
class DDADHyper:
    bn_weight: float = 1.0
    adv_weight: float = 1.0
    discrepancy: str = "l1"  # or "kl"
    temperature: float = 1.0
    student_discrepancy: str = ""  # the student's loss; "" = ``discrepancy`` (both sides play one game)
    student_steps: int = 5
    batch_size: int = 256  # global
    latent_dim: int = 256
    replay_slots: int = 0  # past generated batches kept for replay; 0 = off
    onehot_weight: float = 0.0  # optional DAFL terms in the generator loss: confident images
    balance_weight: float = 0.0  # ... and balanced classes (information entropy)
    student_augment: augment.Augment = augment.Augment()  # of the student steps' generated images
    num_classes: int = 0  # > 0: class-conditional generator (latent = noise ++ one-hot class)
    class_weight: float = 0.0  # weight of the teacher's cross-entropy against that class
    student_ema: float = 0.0  # > 0: decay of the student's moving average (per iteration)

    @property
    def student_loss_kind(self) -> str:
        """The discrepancy the student minimises (the generator always maximises ``discrepancy``)."""
        return self.student_discrepancy or self.discrepancy


def draw_latents(rng, hp: DDADHyper, shape) -> jnp.ndarray:
    """Generator inputs for batches of leading ``shape``: Gaussian noise, followed, for a
    class-conditional generator, by the one-hot encoding of a uniformly drawn class."""
    z = jax.random.normal(rng, (*shape, hp.latent_dim))  # the unconditional stream unchanged
    if not hp.num_classes:
        return z
    labels = jax.random.randint(jax.random.fold_in(rng, 1), shape, 0, hp.num_classes)
    return with_classes(z, labels, hp.num_classes)


def with_classes(z: jnp.ndarray, labels: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """A conditional generator's input: the noise ``z`` followed by one-hot ``labels``."""
    return jnp.concatenate([z, jax.nn.one_hot(labels, num_classes, dtype=z.dtype)], axis=-1)


def conditioning_classes(hp: DDADHyper, z: jnp.ndarray) -> jnp.ndarray:
    """The one-hot classes a conditional generator's inputs ``z`` ask for."""
    return z[..., hp.latent_dim:]


def _scoped(name):
    """Runs a function under ``jax.named_scope(name)``: its ops carry the name in profiles."""
    def wrap(fn):
        @functools.wraps(fn)
        def scoped(*args, **kwargs):
            with jax.named_scope(name):
                return fn(*args, **kwargs)
        return scoped
    return wrap


@_scoped("optimizer")
def _update(train_state: TrainState, grads, batch_stats) -> TrainState:
    return train_state.apply_gradients(grads=grads, batch_stats=batch_stats)


def _pmean(x):
    return jax.lax.pmean(x, AXIS)


@_scoped("generator")
def _generate(generator: TrainState, z):
    """Generator forward in training mode (BatchNorm on the global batch)."""
    images, updates = generator.apply_fn(
        {"params": generator.params, "batch_stats": generator.batch_stats}, z, train=True,
        mutable=["batch_stats"])
    return images, updates["batch_stats"]


@_scoped("student")
def _student_logits(student: TrainState, params, x):
    """Student forward in training mode; returns (logits, updated batch_stats)."""
    if not student.batch_stats:
        return student.apply_fn({"params": params}, x, train=True), {}
    logits, updates = student.apply_fn({"params": params, "batch_stats": student.batch_stats}, x,
                                       train=True, mutable=["batch_stats"])
    return logits, updates["batch_stats"]


@_scoped("generator_step")
def generator_step(hp: DDADHyper, teacher_apply, teacher_vars, state: DDADState, z):
    """Returns (state, metrics, (images, teacher logits)) -- the last two local and constant."""
    g, s = state.generator, state.student
    teacher_bn = teacher_vars.get("batch_stats", {})

    def loss_fn(params):
        x, g_stats = _generate(g.replace(params=params), z)
        t_logits, observed = teacher_apply(x)
        s_logits, _ = _student_logits(s, s.params, x)  # student BN updates are not kept here
        adv = _pmean(losses.discrepancy(s_logits, t_logits, hp.discrepancy, hp.temperature))
        bn = losses.bn_statistics_loss(observed, teacher_bn) if hp.bn_weight else jnp.zeros(())
        t32 = t_logits.astype(jnp.float32)
        onehot = _pmean(losses.one_hot_loss(t32))
        balance = losses.negative_entropy(_pmean(jnp.mean(jax.nn.softmax(t32), axis=0)))
        loss = hp.bn_weight * bn - hp.adv_weight * adv + hp.onehot_weight * onehot + hp.balance_weight * balance
        metrics = {"gen/loss": loss, "gen/bn_loss": bn, "gen/adv_discrepancy": adv,
                   "gen/onehot_loss": onehot, "gen/class_entropy": -balance}
        if hp.num_classes:
            wanted = conditioning_classes(hp, z)
            ce = _pmean(jnp.mean(optax.softmax_cross_entropy(t32, wanted)))
            loss = loss + hp.class_weight * ce
            hit = _pmean(jnp.mean(jnp.argmax(t32, -1) == jnp.argmax(wanted, -1)))
            metrics.update({"gen/loss": loss, "gen/class_ce": ce, "gen/class_accuracy": hit})
        return loss, (g_stats, metrics, (x, t_logits))

    grads, (g_stats, metrics, batch) = jax.grad(loss_fn, has_aux=True)(g.params)
    batch = jax.lax.stop_gradient(batch)
    return state.replace(generator=_update(g, grads, g_stats)), metrics, batch


@_scoped("student_step")
def student_step(hp: DDADHyper, teacher_apply, state: DDADState, z, replay_slots=None,
                 aug_params=None) -> Tuple[DDADState, Dict]:
    """One student update on a fresh generated batch (augmented with ``aug_params``, this
    replica's part of parameters drawn for the global batch), plus a replayed one if
    ``replay_slots``."""
    g, s = state.generator, state.student
    x, _ = _generate(g, z)  # the generator's running statistics are not used; not updated here
    x = jax.lax.stop_gradient(x)
    if hp.student_augment.active:
        with jax.named_scope("augment"):
            x = augment.apply(hp.student_augment, x, aug_params,
                              gather=lambda v: jax.lax.all_gather(v, AXIS, tiled=True))
    t_logits = jax.lax.stop_gradient(teacher_apply(x)[0])
    if replay_slots is not None:
        x_old, t_old = replay.read(state.memory, replay_slots)
        x = jnp.concatenate([x, x_old.astype(x.dtype)])
        t_logits = jnp.concatenate([t_logits, t_old.astype(t_logits.dtype)])

    def loss_fn(params):
        s_logits, s_stats = _student_logits(s, params, x)
        loss = _pmean(losses.discrepancy(s_logits, t_logits, hp.student_loss_kind, hp.temperature))
        return loss, s_stats

    (loss, s_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(s.params)
    return state.replace(student=_update(s, grads, s_stats)), {"student/loss": loss}


def state_spec(hp: DDADHyper) -> DDADState:
    """Partition specs of a DDADState: replicated, except the replay memory (batch-sharded)."""
    P = jax.sharding.PartitionSpec
    return DDADState(step=P(), generator=P(), student=P(), memory=replay.SPEC if hp.replay_slots else None,
                     student_ema=P() if hp.student_ema else None)


def init_student_ema(student: TrainState) -> Any:
    """The moving average's starting point: a copy of the student's variables."""
    return jax.tree.map(jnp.copy, state_lib.variables_of(student))


def update_student_ema(hp: DDADHyper, state: DDADState) -> DDADState:
    """Moves the student's average towards its current variables (after ``state.step``
    earlier iterations); identity when ``student_ema`` is off."""
    if not hp.student_ema:
        return state
    decay = state_lib.ema_decay(hp.student_ema, state.step.astype(jnp.float32))
    average = state_lib.ema_update(state.student_ema, state_lib.variables_of(state.student), decay)
    return state.replace(student_ema=average)


def place_state(state: DDADState, hp: DDADHyper, mesh) -> DDADState:
    """Puts a host/checkpoint state on ``mesh`` with the layout ``make_iteration`` expects."""
    specs = state_spec(hp)
    return jax.tree.map(lambda spec, x: jax.device_put(x, jax.sharding.NamedSharding(mesh, spec)),
                        specs, state, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def make_iteration(teacher_model, hp: DDADHyper, mesh, max_traces: Optional[int] = None,
                   adversarial: bool = True):
    """Jitted ``(state, teacher_vars, rng) -> (state, metrics)``: one full DDAD iteration,
    the student steps fused in a ``lax.scan``, data-parallel over ``mesh``; the state's
    buffers are donated. ``max_traces`` (tests) makes a retrace beyond it an error.

    ``adversarial=False`` gives a fine-tuning iteration: the student steps alone, on images
    of the generator as it stands (no generator update, nothing written to the replay
    memory)."""
    parallel.check_batch_size(hp.batch_size, mesh)

    def per_replica(state, teacher_vars, z_gen, z_student, slots, aug_params):
        teacher_apply = _scoped("teacher")(
            lambda x: apply_with_bn_stats(teacher_model, teacher_vars, x, axis_name=AXIS))
        g_metrics = {}
        if adversarial:
            state, g_metrics, (x, t_logits) = generator_step(hp, teacher_apply, teacher_vars, state, z_gen)
            if hp.replay_slots:  # remember the generator step's batch (the teacher already ran on it)
                state = state.replace(memory=replay.write(state.memory, state.step % hp.replay_slots,
                                                          x, t_logits))
        # Fully unrolled on CPU: XLA's CPU runtime ran large convolutions inside a while loop
        # ~7x slower (CIFAR ResNet-34 -> ResNet-18 at batch 64: 247 s vs 35 s); elsewhere a loop.
        state, s_metrics = jax.lax.scan(lambda st, xs: student_step(hp, teacher_apply, st, *xs),
                                        state, (z_student, slots, aug_params),
                                        unroll=backends.scan_unroll(hp.student_steps))
        s_metrics = jax.tree.map(lambda m: m[-1], s_metrics)  # the last student step's loss
        state = update_student_ema(hp, state)
        return state.replace(step=state.step + 1), {**g_metrics, **s_metrics}

    per_step = jax.sharding.PartitionSpec(None, AXIS)
    spec = state_spec(hp)
    sharded = parallel.data_parallel(
        per_replica, mesh,
        in_specs=(spec, parallel.REPLICATED, parallel.SHARDED, per_step, per_step if hp.replay_slots else None,
                  per_step if hp.student_augment.active else None),
        out_specs=(spec, parallel.REPLICATED))

    def iteration(state: DDADState, teacher_vars: Any, rng: jax.Array):
        # Noise for the global batch is drawn once, so results do not depend on the device count.
        key = jax.random.fold_in(rng, state.step)
        k_gen, k_student = jax.random.split(key)
        z_gen = draw_latents(k_gen, hp, (hp.batch_size,))
        z_student = draw_latents(k_student, hp, (hp.student_steps, hp.batch_size))
        slots = None
        if hp.replay_slots:
            filled = jnp.minimum(state.step + 1, hp.replay_slots)  # this iteration's batch included
            slots = replay.draw_slots(jax.random.fold_in(key, 2), filled, hp.student_steps, hp.batch_size)
        # Augmentations are drawn for the global batch too (mixup partners index it).
        aug_params = augment.draw(jax.random.fold_in(key, 3), hp.student_augment,
                                  (hp.student_steps, hp.batch_size))
        return sharded(state, teacher_vars, z_gen, z_student, slots, aug_params)

    if max_traces is not None:
        iteration = chex.assert_max_traces(iteration, n=max_traces)
    return jax.jit(iteration, donate_argnums=0)
