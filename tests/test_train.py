"""The DDAD loop in-process: resume exactness, outputs a user sees, and error paths."""

import json
import os

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import ddad as ddad_config
from ddad_jax import train
from ddad_jax.errors import UserError


def _config(teacher_dir, data_dir, **overrides):
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.teacher_dir, config.data_dir, config.num_devices = teacher_dir, data_dir, 1
    config.lr_schedule, config.lr_milestones = "step", (1,)  # schedule independent of run length
    config.finetune_epochs = 0  # the adversarial loop alone (tests/test_finetune.py: the fine-tuning)
    config.update(overrides)
    return config


def _latest_checkpoint(workdir):
    ckpt_dir = os.path.join(workdir, "checkpoints")
    step = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    with ocp.StandardCheckpointer() as ckptr:
        return step, ckptr.restore(os.path.join(ckpt_dir, str(step), "default"))


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    # With a 3-slot replay memory, which wraps around within the 4 iterations.
    config = lambda epochs: _config(fmnist_smoke_teacher, fmnist_data_dir, num_epochs=epochs, replay_slots=3)
    straight = str(tmp_path / "straight")
    train.train_and_evaluate(config(2), straight)
    resumed = str(tmp_path / "resumed")
    train.train_and_evaluate(config(1), resumed)
    assert _latest_checkpoint(resumed)[0] == 2  # stopped half-way
    summary = train.train_and_evaluate(config(2), resumed)
    step_a, state_a = _latest_checkpoint(straight)
    step_b, state_b = _latest_checkpoint(resumed)
    assert step_a == step_b == 4
    chex.assert_trees_all_equal(state_a, state_b)
    assert summary["iterations"] == 4
    # metrics of the resumed run: one record per iteration, none duplicated
    with open(os.path.join(resumed, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if "gen/loss" in line]
    assert steps == [1, 2, 3, 4]


def test_run_writes_samples_metrics_tensorboard_and_summary(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    workdir = str(tmp_path / "run")
    summary = train.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["epoch_0001.png", "epoch_0002.png"]
    from PIL import Image
    assert Image.open(os.path.join(workdir, "samples", "epoch_0002.png")).size[0] > 64
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))
    with open(os.path.join(workdir, "summary.json")) as f:
        on_disk = json.load(f)
    assert on_disk["teacher"] == "lenet5_bn" and on_disk["student"] == "lenet5_half"
    assert 0.0 <= on_disk["student_acc"] <= 1.0 and on_disk == json.loads(json.dumps(summary))


def test_missing_teacher_is_a_clear_error(tmp_path, fmnist_data_dir):
    with pytest.raises(UserError, match="no teacher checkpoint"):
        train.train_and_evaluate(_config(str(tmp_path / "nothing"), fmnist_data_dir), str(tmp_path / "w"))


def test_teacher_of_another_architecture_is_a_clear_error(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    with pytest.raises(UserError, match="is a 'lenet5_bn', but the config asks for 'lenet5'"):
        train.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, teacher="lenet5"),
                                 str(tmp_path / "w"))


def test_corrupt_teacher_checkpoint_is_a_clear_error(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    fake = tmp_path / "fake_teacher"
    fake.mkdir()
    meta = json.load(open(os.path.join(fmnist_smoke_teacher, "teacher.json")))
    json.dump({**meta, "model": "lenet5_half_bn"}, open(fake / "teacher.json", "w"))
    os.symlink(os.path.join(fmnist_smoke_teacher, "teacher"), fake / "teacher")
    with pytest.raises(UserError, match="does not match a 'lenet5_half_bn'"):
        train.train_and_evaluate(_config(str(fake), fmnist_data_dir, teacher="lenet5_half_bn"),
                                 str(tmp_path / "w"))


def test_teacher_without_batchnorm_needs_explicit_adversarial_only(tmp_path, fmnist_data_dir):
    from configs import teacher as teacher_config
    from ddad_jax import teacher
    tdir = str(tmp_path / "plain_teacher")
    tc = teacher_config.get_config("fashion_mnist,smoke")
    tc.model, tc.data_dir, tc.num_devices, tc.num_epochs, tc.steps_per_epoch = "lenet5", fmnist_data_dir, 1, 1, 1
    teacher.train_and_evaluate(tc, tdir)
    with pytest.raises(UserError, match="has no BatchNorm layers"):
        train.train_and_evaluate(_config(tdir, fmnist_data_dir, teacher="lenet5"), str(tmp_path / "w1"))
    summary = train.train_and_evaluate(
        _config(tdir, fmnist_data_dir, teacher="lenet5", adversarial_only=True, num_epochs=1),
        str(tmp_path / "w2"))
    assert summary["iterations"] == 2


def test_non_finite_loss_stops_without_touching_checkpoints(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, num_epochs=1), workdir)
    before = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(workdir + "/checkpoints") for p in fs}
    with pytest.raises(UserError, match="non-finite"):
        train.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, num_epochs=2,
                                         bn_weight=float("nan")), workdir)
    after = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(workdir + "/checkpoints") for p in fs}
    assert before == after and _latest_checkpoint(workdir)[0] == 2


def test_workdir_of_another_run_is_refused(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, num_epochs=1), workdir)
    with pytest.raises(UserError, match="holds a run with student='lenet5_half'"):
        train.train_and_evaluate(_config(fmnist_smoke_teacher, fmnist_data_dir, student="lenet5"), workdir)


def test_dataset_not_prepared_says_how_to_prepare(tmp_path, fmnist_smoke_teacher):
    with pytest.raises(UserError, match="python -m ddad_jax.data.prepare fashion_mnist"):
        train.train_and_evaluate(_config(fmnist_smoke_teacher, str(tmp_path / "empty")), str(tmp_path / "w"))


def test_bfloat16_run_trains_and_checkpoints_float32(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    workdir = str(tmp_path / "bf16")
    summary = train.train_and_evaluate(
        _config(fmnist_smoke_teacher, fmnist_data_dir, num_epochs=1, compute_dtype="bfloat16"), workdir)
    assert 0.0 <= summary["student_acc"] <= 1.0
    _, saved = _latest_checkpoint(workdir)
    dtypes = {np.asarray(x).dtype for x in jax.tree.leaves(saved["student"]["params"])}
    assert dtypes == {np.dtype(np.float32)}


@pytest.mark.parametrize("generator_schedule, decays", [("", True), ("constant", False)])
def test_generator_can_keep_its_own_learning_rate_schedule(generator_schedule, decays):
    from ddad_jax import data, models
    config = ddad_config.get_config("fashion_mnist,smoke")  # cosine over 4 iterations
    config.generator_lr_schedule = generator_schedule
    spec = data.get_spec("fashion_mnist")
    gen = models.get_generator(config.generator_channels, 32, 1)
    student = models.get_classifier("lenet5_half", 10)
    state = train.create_state(config, spec, gen, student, jax.random.key(0))
    total = config.num_epochs * config.iters_per_epoch
    g = state.generator
    grads = jax.tree.map(np.ones_like, g.params)
    opt_state, sizes = g.opt_state, []
    for _ in range(total + 1):
        updates, opt_state = g.tx.update(grads, opt_state, g.params)
        sizes.append(max(float(np.abs(u).max()) for u in jax.tree.leaves(updates)))
    np.testing.assert_allclose(sizes[0], config.generator_lr, rtol=1e-3)  # Adam: |update| = lr
    if decays:  # the student's cosine schedule: nothing left after `total` generator updates
        assert sizes[-1] < 1e-9
    else:
        np.testing.assert_allclose(sizes[-1], config.generator_lr, rtol=1e-3)


def test_unknown_schedules_are_clear_errors():
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.generator_lr_schedule = "linear"
    with pytest.raises(UserError, match="generator_lr_schedule"):
        train._validate(config, {"batch_stats": {"bn": {}}})
    config.generator_lr_schedule, config.lr_schedule = "", "warmup"
    with pytest.raises(UserError, match="lr_schedule must be one of"):
        train._validate(config, {"batch_stats": {"bn": {}}})
