"""The one training loop and the build step before it: exact resume, what a run writes,
validation before anything touches the disk, and errors as one line."""

import json
import os
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import ddad as ddad_config
from configs import teacher as teacher_config
from ddad_jax import trainers, data, loop, models
from ddad_jax.errors import UserError
from conftest import train_until_interrupted


def _config(teacher_dir, data_dir, **overrides):
    config = ddad_config.get_config("fashion_mnist,smoke")  # 2 epochs of 2 iterations, 1 fine-tuning epoch
    config.teacher_dir, config.data_dir, config.num_devices = teacher_dir, data_dir, 1
    config.update(overrides)
    return config


def _checkpoint(workdir, step=None):
    ckpt_dir = os.path.join(workdir, "checkpoints")
    step = step or max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    with ocp.StandardCheckpointer() as ckptr:
        return step, ckptr.restore(os.path.join(ckpt_dir, str(step), "default"))


def _records(workdir, key):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if key in line]


@pytest.mark.slow
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    config = _config(fmnist_smoke_teacher, fmnist_data_dir, pool_size=3)  # the pool wraps around
    straight = str(tmp_path / "straight")
    summary = loop.train_and_evaluate(config, straight)
    assert summary["iterations"] == 4 and summary["finetune_iterations"] == 2

    interrupted = str(tmp_path / "interrupted")
    run = trainers.build(config)
    assert run.class_names[8] == "bag"  # the sample grids' labels
    train_until_interrupted(run, interrupted, at_step=5)  # inside fine-tuning, after the checkpoint of step 4
    assert _checkpoint(interrupted)[0] == 4
    resumed = loop.train_and_evaluate(config, interrupted)
    (step_a, state_a), (step_b, state_b) = _checkpoint(straight), _checkpoint(interrupted)
    assert step_a == step_b == 6
    chex.assert_trees_all_equal(state_a, state_b)
    assert resumed["student_acc"] == summary["student_acc"]
    assert [r["step"] for r in _records(interrupted, "student/loss")] == [1, 2, 3, 4, 5, 6]  # none twice
    assert resumed["wall_s"] >= _records(interrupted, "elapsed_s")[3]["elapsed_s"]  # both segments counted


@pytest.mark.slow
def test_run_writes_samples_metrics_tensorboard_and_a_summary_of_its_final_student(
        tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    workdir = str(tmp_path / "run")
    config = _config(fmnist_smoke_teacher, fmnist_data_dir, finetune_epochs=0)
    summary = loop.train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["epoch_0001.png", "epoch_0002.png"]
    from PIL import Image  # pylint: disable=import-outside-toplevel
    assert Image.open(os.path.join(workdir, "samples", "epoch_0002.png")).size[0] > 64
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert summary["teacher"] == "lenet5_bn" and summary["student"] == "lenet5_half"
    assert summary["generator_terms"] == {"adversarial": 1.0, "bn": 1.0}
    # the reported accuracy is the final checkpoint's student on the test examples, evaluated here
    _, state = _checkpoint(workdir)
    spec = data.get_spec("fashion_mnist")
    x, y = data.load_split(spec, "test", fmnist_data_dir)
    logits = models.get_classifier("lenet5_half", 10).apply({"params": state["student"]["params"]},
                                                              data.normalize(x[:64], spec))
    assert summary["student_acc"] == pytest.approx(float(np.mean(np.argmax(logits, -1) == y[:64])))
    assert _records(workdir, "test/student_accuracy")[-1]["test/student_accuracy"] == summary["student_acc"]


def test_missing_teacher_is_a_clear_error(tmp_path, fmnist_data_dir):
    with pytest.raises(UserError, match="no teacher checkpoint"):
        loop.train_and_evaluate(_config(str(tmp_path / "nothing"), fmnist_data_dir), str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")  # nothing written before validation


def test_teacher_of_another_architecture_or_a_corrupt_one_is_a_clear_error(tmp_path, fmnist_smoke_teacher,
                                                                          fmnist_data_dir):
    with pytest.raises(UserError, match="is a 'lenet5_bn', but the config asks for 'lenet5'"):
        loop.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, teacher="lenet5"), str(tmp_path / "w"))
    fake = tmp_path / "fake_teacher"
    fake.mkdir()
    meta = json.load(open(os.path.join(fmnist_smoke_teacher, "teacher.json")))
    json.dump({**meta, "model": "lenet5_half_bn"}, open(fake / "teacher.json", "w"))
    os.symlink(os.path.join(fmnist_smoke_teacher, "teacher"), fake / "teacher")
    with pytest.raises(UserError, match="does not match a 'lenet5_half_bn'"):
        loop.train_and_evaluate(_config(str(fake), fmnist_data_dir, teacher="lenet5_half_bn"), str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("card", ["{not json", "[1, 2]", ""])
def test_a_garbage_teacher_card_is_a_clear_error(tmp_path, fmnist_smoke_teacher, fmnist_data_dir, card):
    broken = tmp_path / "teacher"
    shutil.copytree(fmnist_smoke_teacher, broken)
    (broken / "teacher.json").write_text(card)
    with pytest.raises(UserError, match="is not a readable teacher card"):
        loop.train_and_evaluate(_config(str(broken), fmnist_data_dir), str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_teacher_without_batchnorm_needs_the_bn_term_off(tmp_path, fmnist_data_dir):
    tdir = str(tmp_path / "plain_teacher")
    tc = teacher_config.get_config("fashion_mnist,smoke")
    tc.model, tc.data_dir, tc.num_devices, tc.steps_per_epoch = "lenet5", fmnist_data_dir, 1, 1
    loop.train_and_evaluate(tc, tdir)
    with pytest.raises(UserError, match="has no BatchNorm layers"):
        loop.train_and_evaluate(_config(tdir, fmnist_data_dir, teacher="lenet5"), str(tmp_path / "w1"))
    config = _config(tdir, fmnist_data_dir, teacher="lenet5", num_epochs=1, finetune_epochs=0)
    config.generator_terms.bn = 0.0
    assert loop.train_and_evaluate(config, str(tmp_path / "w2"))["generator_terms"] == {"adversarial": 1.0}


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory, fmnist_smoke_teacher, fmnist_data_dir):
    """A finished one-epoch smoke DDAD run that the tests below only read (or try to reuse)."""
    workdir = str(tmp_path_factory.mktemp("one_epoch") / "run")
    loop.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, num_epochs=1, finetune_epochs=0), workdir)
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("field, value", [("student_lr", 1e38), ("generator_lr", 1e9)])
def test_divergence_stops_without_touching_checkpoints(tmp_path, one_epoch_run, fmnist_smoke_teacher,
                                                       fmnist_data_dir, field, value):
    workdir = one_epoch_run
    files = lambda: {p: os.path.getmtime(os.path.join(d, p)) for d, _, fs in os.walk(workdir + "/checkpoints") for p in fs}
    before = files()
    # the same run in a new workdir diverges at once
    with pytest.raises(UserError, match="non-finite"):
        loop.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, **{field: value}), str(tmp_path / "new"))
    assert not os.path.exists(tmp_path / "new" / "checkpoints" / "1")
    assert files() == before


@pytest.mark.slow
def test_teacher_training_never_saves_a_non_finite_state(tmp_path, fmnist_data_dir):
    tc = teacher_config.get_config("fashion_mnist,smoke")
    tc.data_dir, tc.num_devices, tc.learning_rate, tc.optimizer = fmnist_data_dir, 1, 1e38, "sgd"
    with pytest.raises(UserError, match="non-finite"):
        loop.train_and_evaluate(tc, str(tmp_path / "t"))
    assert not os.path.exists(tmp_path / "t" / "teacher.json")
    assert not os.listdir(tmp_path / "t" / "checkpoints")


@pytest.mark.parametrize("change, match", [({"seed": 1}, "seed"), ({"student_lr": 0.2}, "student_lr"),
                                           ({"student": "lenet5"}, "student")])
def test_workdir_of_another_run_is_refused(one_epoch_run, fmnist_smoke_teacher, fmnist_data_dir, change, match):
    record = open(os.path.join(one_epoch_run, "run.json")).read()
    with pytest.raises(UserError, match=match):
        loop.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, num_epochs=1, finetune_epochs=0,
                                        **change), one_epoch_run)
    assert open(os.path.join(one_epoch_run, "run.json")).read() == record  # refused before anything was written


@pytest.mark.slow
def test_workdir_of_another_teacher_is_refused(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    other = str(tmp_path / "other_teacher")  # same architecture and dataset, other weights
    tc = teacher_config.get_config("fashion_mnist,smoke")
    tc.data_dir, tc.num_devices, tc.seed = fmnist_data_dir, 1, 1
    loop.train_and_evaluate(tc, other)
    config = lambda teacher_dir: _config(teacher_dir, fmnist_data_dir, num_epochs=1, finetune_epochs=0)
    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config(fmnist_smoke_teacher), workdir)
    with pytest.raises(UserError, match="teacher_fingerprint"):
        loop.train_and_evaluate(config(other), workdir)
    moved = str(tmp_path / "moved_teacher")  # the same teacher elsewhere is the same run
    shutil.copytree(fmnist_smoke_teacher, moved)
    loop.train_and_evaluate(config(moved), workdir)


def test_dataset_not_prepared_says_how_and_writes_nothing(tmp_path):
    """A run that needs the data (teacher training) and finds it unprepared says how to
    prepare it; a data-free run goes on without it (tests/test_own_data.py)."""
    tc = teacher_config.get_config("fashion_mnist,smoke")
    with tc.unlocked():
        tc.data_dir = str(tmp_path / "empty")
    with pytest.raises(UserError, match="python -m ddad_jax.data.prepare fashion_mnist"):
        loop.train_and_evaluate(tc, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("field, value, match", [
    ("num_epochs", -3, "num_epochs must be >= 1"), ("iters_per_epoch", 0, "iters_per_epoch must be >= 1"),
    ("latent_dim", -5, "latent_dim must be >= 1"), ("log_every", 0, "log_every must be >= 1"),
    ("eval_examples", -2, "eval_examples must be >= -1"), ("student_lr", 0.0, "student_lr must be > 0"),
    ("generator_lr", float("nan"), "generator_lr must be a finite number"),
    ("finetune_lr", 0.0, "finetune_lr must be > 0"), ("pool_size", -2, "pool_size must be >= -1"),
    ("student_momentum", 1.5, "student_momentum must be >= 0.0 and <= 1.0"),
    ("student_objective", "l2", "student_objective must be one of 'l1', 'kl', 'scratch'"),
    ("student_objective", "ka", "student objective 'ka' needs labels, and a data-free run has none"),
    ("finetune_objective", "ctkd", "student objective 'ctkd' needs labels"),
    ("finetune_objective", "mse", "finetune_objective must be one of"),
    ("lr_schedule", "warmup", "lr_schedule must be one of"), ("generator_lr_schedule", "linear", "generator_lr_schedule"),
    ("compute_dtype", "float16", "compute_dtype must be one of"),
])
def test_every_field_is_validated_up_front(field, value, match):
    config = ddad_config.get_config("fashion_mnist,smoke")
    with config.unlocked():
        config[field] = value
    with pytest.raises(UserError, match=match):
        trainers.validate(config)


@pytest.mark.parametrize("terms, match", [({"bn": 1.0, "entropy": 1.0}, "unknown generator term 'entropy'"),
                                          ({"bn": -1.0}, "generator_terms.bn must be a finite weight >= 0"),
                                          ({"bn": 0.0, "adversarial": 0.0}, "no term with a non-zero weight")])
def test_generator_terms_are_validated(terms, match):
    config = ddad_config.get_config("fashion_mnist,smoke")
    with config.unlocked():
        config.generator_terms = terms
    with pytest.raises(UserError, match=match):
        trainers.validate(config)


def test_student_schedule_anneals_again_from_the_finetune_lr():
    config = ddad_config.get_config("fashion_mnist")  # cosine over the adversarial epochs
    adversarial_updates = config.num_epochs * config.iters_per_epoch * config.student_steps_per_generator_step
    config.finetune_epochs, config.finetune_lr = 2, 0.005
    schedule = trainers.student_schedule(config)
    np.testing.assert_allclose(schedule(0), config.student_lr, rtol=1e-6)
    assert float(schedule(adversarial_updates - 1)) < 1e-6  # the cosine has run out
    finetune_updates = 2 * config.iters_per_epoch * config.student_steps_per_generator_step
    np.testing.assert_allclose(schedule(adversarial_updates), 0.005, rtol=1e-6)  # then a cosine
    np.testing.assert_allclose(schedule(adversarial_updates + finetune_updates // 2), 0.0025, rtol=1e-4)
    assert float(schedule(adversarial_updates + finetune_updates)) < 1e-9


@pytest.mark.parametrize("generator_schedule, decays", [("", True), ("constant", False)])
def test_generator_can_keep_its_own_learning_rate_schedule(generator_schedule, decays):
    config = ddad_config.get_config("fashion_mnist,smoke")  # cosine over 4 iterations
    config.generator_lr_schedule = generator_schedule
    schedule = trainers.generator_schedule(config)
    total = config.num_epochs * config.iters_per_epoch
    np.testing.assert_allclose(schedule(0), config.generator_lr, rtol=1e-6)
    np.testing.assert_allclose(schedule(total), 0.0 if decays else config.generator_lr, atol=1e-9)
    assert isinstance(optax.adam(schedule), optax.GradientTransformation)


@pytest.mark.slow
def test_bfloat16_run_trains_and_checkpoints_float32(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    workdir = str(tmp_path / "bf16")
    loop.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, num_epochs=1, finetune_epochs=0,
                                    compute_dtype="bfloat16"), workdir)
    _, saved = _checkpoint(workdir)
    dtypes = {np.asarray(x).dtype for x in jax.tree.leaves(saved["student"]["params"])}
    assert dtypes == {np.dtype(np.float32)}


def test_the_loop_keeps_at_most_two_steps_queued(tmp_path, monkeypatch):
    """A fast step must not queue hundreds of collective programs (XLA:CPU's rendezvous abort):
    by the time step n is dispatched, step n-2's metrics have been waited for."""
    from typing import NamedTuple  # pylint: disable=import-outside-toplevel

    class State(NamedTuple):
        step: jax.Array
        w: jax.Array

    waited, dispatched_after = [], {}

    def step(n, state):
        dispatched_after[n] = list(waited)
        return State(state.step + 1, state.w * 2.0), {"loss": jnp.float32(n)}

    def block(tree):
        if tree is not None:
            waited.append(int(tree["loss"]))
        return tree

    monkeypatch.setattr(loop.jax, "block_until_ready", block)
    run = trainers.Run(name="fake", state=State(jnp.zeros((), jnp.int32), jnp.ones(3)), place=lambda s: s,
                    step=step, total_steps=6, steps_per_epoch=3, identity={"fake": 1},
                    evaluate=lambda s: {"test/x": 0.0}, summarize=lambda s, e, w: {"student_acc": 0.0})
    loop.train(run, str(tmp_path / "w"))
    assert waited == [1, 2, 3, 4, 5]
    for n in range(3, 7):
        assert n - 2 in dispatched_after[n]
