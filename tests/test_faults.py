"""Faults a run must survive or report in one line: evaluation at any batch size on many
devices, corrupt or torn files in a workdir, a workdir of another run or one that cannot
be used, a bad --config file, and a run SIGKILLed at random moments and rerun."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, one_line_error, run_entry, xla_flags
from ddad_jax import checkpoints, data, models, parallel, workdir as workdir_lib
from ddad_jax.errors import UserError
from ddad_jax.evaluation import EvalSet, _correct_counts, evaluate
from ddad_jax.state import init_variables


def _env():
    # as tests/conftest.py's run_entry: the launcher splits the CPU into 4 devices itself
    return {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags()}


# ---------------------------------------------------------------- evaluation

def _lenet_and_test_split(fmnist_data_dir, n):
    spec = data.get_spec("fashion_mnist")
    x, y = data.load_split(spec, "test", fmnist_data_dir)
    model = models.get_classifier("lenet5_bn", 10, bn_axis_name=parallel.BATCH_AXIS)
    variables = init_variables(model, jax.random.key(3), jnp.zeros((1, 32, 32, 1)))
    return spec, model, variables, x[:n], y[:n]


def _numpy_correct(model, variables, spec, x, y):
    """Correct predictions counted the plain way: one device, large batches, numpy."""
    apply = jax.jit(lambda v, images: model.apply(v, data.normalize(images, spec), train=False))
    predictions = np.concatenate([np.asarray(apply(variables, x[i:i + 500])).argmax(-1)
                                  for i in range(0, len(x), 500)])
    return int(np.sum(predictions == y))


@pytest.mark.slow
def test_evaluation_with_tiny_batches_on_8_devices_has_no_collective_and_counts_right(fmnist_data_dir):
    # Batch 8 on 8 devices: 251 batches of one example a device (the last one padded). The
    # per-batch sharded programs this replaces each held an all-reduce; hundreds queued at
    # once made XLA:CPU's collective rendezvous time out and abort the process.
    spec, model, variables, x, y = _lenet_and_test_split(fmnist_data_dir, 2003)
    mesh = parallel.make_mesh(8)
    eval_set = EvalSet.build(x, y, spec, 8, mesh)
    assert eval_set.images.shape == (251, 8, 28, 28, 1) and eval_set.num_examples == 2003
    hlo = _correct_counts.lower(parallel.replicate(variables, mesh), eval_set.images, eval_set.labels,
                                model=model, spec=spec, mesh=mesh).compile().as_text()
    for collective in ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter"):
        assert collective not in hlo
    expected = _numpy_correct(model, variables, spec, x, y)
    assert 0 < expected < 2003
    assert evaluate(model, variables, eval_set) == expected / 2003
    # the same without a mesh, and with a batch that is not a multiple of the devices
    assert evaluate(model, variables, EvalSet.build(x, y, spec, 300)) == expected / 2003
    assert evaluate(model, variables, EvalSet.build(x, y, spec, 13, mesh)) == expected / 2003


def test_eval_batch_size_is_checked_and_capped():
    spec = data.get_spec("fashion_mnist")
    x, y = np.zeros((10, 28, 28, 1), np.uint8), np.zeros(10, np.int32)
    with pytest.raises(UserError, match="eval_batch_size must be >= 1, got 0"):
        EvalSet.build(x, y, spec, 0)
    # a batch larger than the split would only be padding: 10 examples -> one batch of 10,
    # rounded up to 16 on 8 devices
    assert EvalSet.build(x, y, spec, 10**9).images.shape[:2] == (1, 10)
    assert EvalSet.build(x, y, spec, 10**9, parallel.make_mesh(8)).images.shape[:2] == (1, 16)


@pytest.mark.slow
def test_cli_teacher_with_eval_batch_size_8_on_4_cpu_devices(tmp_path, fmnist_data_dir):
    # Aborted with SIGABRT (rc 134) after ~80 s before evaluation became one program.
    env = {"XLA_FLAGS": xla_flags(4)}
    result = run_entry("fashion_mnist", "--config=configs/teacher.py:fashion_mnist,smoke",
                       f"--workdir={tmp_path / 't'}", f"--config.data_dir={fmnist_data_dir}",
                       "--config.eval_batch_size=8", "--config.eval_examples=2000", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.load(open(tmp_path / "t" / "teacher.json"))["test_examples"] == 2000


# ---------------------------------------------------------------- checkpoints

def _state(value):
    return {"w": jnp.full((4, 3), value, jnp.float32), "b": {"c": jnp.arange(5) + int(value)},
            "step": jnp.asarray(int(value), jnp.int32)}


def _save_steps(directory, steps=(1, 2)):
    ckpt = checkpoints.Checkpointer(directory)
    for s in steps:
        ckpt.save(s, _state(float(s)))
    ckpt.close()


def _truncate(path):
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[:len(content) // 2])


def _data_files(step_dir):
    """The files holding the arrays' values (orbax's OCDBT data files)."""
    d = os.path.join(step_dir, "default", "d")
    return [os.path.join(d, f) for f in os.listdir(d)]


CORRUPTIONS = {
    "deleted data file": lambda step_dir: [os.remove(f) for f in _data_files(step_dir)],
    "truncated data file": lambda step_dir: [_truncate(f) for f in _data_files(step_dir)],
    "garbage tree metadata": lambda step_dir: open(os.path.join(step_dir, "default", "_METADATA"), "wb").write(
        b"\x00{garbage"),
    "truncated array metadata": lambda step_dir: _truncate(
        os.path.join(step_dir, "default", "array_metadatas", "process_0")),
    "deleted manifest": lambda step_dir: os.remove(os.path.join(step_dir, "default", "manifest.ocdbt")),
    "deleted item directory": lambda step_dir: shutil.rmtree(os.path.join(step_dir, "default")),
}


@pytest.mark.slow
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, corruption):
    directory = str(tmp_path / "checkpoints")
    _save_steps(directory)
    CORRUPTIONS[corruption](os.path.join(directory, "2"))
    ckpt = checkpoints.Checkpointer(directory)
    restored = ckpt.restore(_state(0.0))
    err = capsys.readouterr().err
    chex.assert_trees_all_equal(restored, _state(1.0))
    warnings = [l for l in err.splitlines() if l.strip()]
    assert len(warnings) == 1, err
    assert warnings[0].startswith(f"warning: checkpoint {directory}/2 is unreadable (")
    assert "); resuming from 1 (it is kept in " in warnings[0]
    # set aside, not deleted, and out of orbax's way: the next save of step 2 happens
    assert os.path.isdir(os.path.join(directory + ".unreadable", "2"))
    assert ckpt.latest_step() == 1
    ckpt.save(2, _state(22.0))
    ckpt.close()
    chex.assert_trees_all_equal(checkpoints.Checkpointer(directory).restore(_state(0.0)), _state(22.0))


def test_only_corrupt_checkpoints_is_a_clear_error_and_moves_nothing(tmp_path):
    directory = str(tmp_path / "checkpoints")
    _save_steps(directory)
    CORRUPTIONS["garbage tree metadata"](os.path.join(directory, "2"))
    CORRUPTIONS["truncated data file"](os.path.join(directory, "1"))
    with pytest.raises(UserError, match=r"no readable checkpoint \(.*/2: .*/1: .*use a new --workdir") as e:
        checkpoints.Checkpointer(directory).restore(_state(0.0))
    assert "\n" not in str(e.value)
    assert sorted(os.listdir(directory)) == ["1", "2"] and not os.path.exists(directory + ".unreadable")


def test_checkpoint_of_another_shape_is_a_config_mismatch_not_corruption(tmp_path, capsys):
    directory = str(tmp_path / "checkpoints")
    _save_steps(directory)
    other = {"w": jnp.zeros((4, 4)), "b": {"c": jnp.zeros(5, jnp.int32)}, "step": jnp.zeros((), jnp.int32)}
    with pytest.raises(UserError, match=f"checkpoint {directory}/2 does not fit this configuration"):
        checkpoints.Checkpointer(directory).restore(other)
    renamed = {"v": jnp.zeros((4, 3)), "b": {"c": jnp.zeros(5, jnp.int32)}, "step": jnp.zeros((), jnp.int32)}
    with pytest.raises(UserError, match="does not fit this configuration"):
        checkpoints.Checkpointer(directory).restore(renamed)
    assert "warning" not in capsys.readouterr().err
    assert sorted(os.listdir(directory)) == ["1", "2"]


def test_restore_latest_reads_the_newest_as_saved_and_changes_nothing(tmp_path, capsys):
    """The export's read of a finished run: the newest checkpoint as saved (host arrays, no
    target), None with none, one UserError line for a corrupt one -- nothing created or moved."""
    directory = str(tmp_path / "checkpoints")
    assert checkpoints.restore_latest(directory) is None and not os.path.exists(directory)
    _save_steps(directory)
    step, state = checkpoints.restore_latest(directory)
    assert step == 2 and isinstance(state["w"], np.ndarray)
    chex.assert_trees_all_equal(state, jax.device_get(_state(2.0)))
    CORRUPTIONS["truncated data file"](os.path.join(directory, "2"))
    with pytest.raises(UserError, match=f"cannot read checkpoint {directory}/2 ") as e:
        checkpoints.restore_latest(directory)  # no falling back: the latest is what a run ended with
    assert "\n" not in str(e.value) and not capsys.readouterr().err
    assert sorted(os.listdir(directory)) == ["1", "2"] and not os.path.exists(directory + ".unreadable")


# ---------------------------------------------------------------- workdir record

IDENTITY = {"kind": "ddad", "seed": 0, "batch_size": 16, "student_lr": 0.05, "lr_milestones": (1, 2),
            "teacher_fingerprint": "0123456789abcdef", "nan_field": float("nan")}


def test_guard_workdir_accepts_the_same_run_and_names_the_first_difference(tmp_path):
    workdir = str(tmp_path / "w")
    workdir_lib.guard_workdir(workdir, IDENTITY)  # creates the workdir and run.json
    recorded = open(os.path.join(workdir, "run.json")).read()
    workdir_lib.guard_workdir(workdir, dict(IDENTITY))  # tuples as lists, NaN == NaN: the same run
    with pytest.raises(UserError) as e:
        workdir_lib.guard_workdir(workdir, {**IDENTITY, "seed": 1, "student_lr": 0.1})
    assert str(e.value) == (f"--workdir {workdir} holds a run with seed=0, not 1; use a new --workdir, "
                            f"or remove {workdir} to start over (nothing was changed)")
    with pytest.raises(UserError, match="holds a run that did not record extra"):
        workdir_lib.guard_workdir(workdir, {**IDENTITY, "extra": 3})
    missing = {k: v for k, v in IDENTITY.items() if k != "teacher_fingerprint"}
    with pytest.raises(UserError, match="teacher_fingerprint='0123456789abcdef', which this run does not set"):
        workdir_lib.guard_workdir(workdir, missing)
    assert open(os.path.join(workdir, "run.json")).read() == recorded


@pytest.mark.parametrize("content", [b'{"kind": "ddad", "se', b"\x00\xff garbage", b"[1, 2]", b""])
def test_guard_workdir_rewrites_a_torn_run_json_with_a_warning(tmp_path, capsys, content):
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "run.json").write_bytes(content)
    workdir_lib.guard_workdir(str(workdir), IDENTITY)
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warning: {workdir / 'run.json'} is unreadable (") and "\n" not in err
    assert err.endswith("rewriting it for this run")
    assert json.load(open(workdir / "run.json"))["seed"] == 0
    workdir_lib.guard_workdir(str(workdir), IDENTITY)  # and it is the record from now on
    assert capsys.readouterr().err == ""


def test_guard_workdir_that_is_a_file_or_cannot_be_created(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    with pytest.raises(UserError, match=f"--workdir {a_file} is a file"):
        workdir_lib.guard_workdir(str(a_file), IDENTITY)
    with pytest.raises(UserError, match=f"cannot create --workdir {a_file}/sub"):
        workdir_lib.guard_workdir(str(a_file / "sub"), IDENTITY)
    assert a_file.read_text() == "keep me"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="cannot create --workdir"):
            workdir_lib.guard_workdir(str(locked / "w"), IDENTITY)


def test_variables_fingerprint_is_stable_and_sees_one_changed_value():
    model = models.get_classifier("lenet5_bn", 10)
    variables = init_variables(model, jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
    fingerprint = workdir_lib.variables_fingerprint(variables)
    # the documented formula, by hand on a one-leaf tree: sha256 of "path|dtype|shape|" and the bytes
    import hashlib  # pylint: disable=import-outside-toplevel
    by_hand = hashlib.sha256(b"['a']|<f4|(3,)|" + np.ones(3, np.float32).tobytes()).hexdigest()[:16]
    assert workdir_lib.variables_fingerprint({"a": jnp.ones(3)}) == by_hand
    again = init_variables(model, jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
    assert workdir_lib.variables_fingerprint(jax.device_get(again)) == fingerprint  # host or device
    assert workdir_lib.variables_fingerprint(parallel.replicate(again, parallel.make_mesh(8))) == fingerprint
    flat, treedef = jax.tree.flatten(jax.device_get(variables))
    for i in (0, len(flat) - 1):  # one value of the first, then of the last leaf
        changed = [np.array(leaf, copy=True) for leaf in flat]
        changed[i].reshape(-1)[0] += 1e-3
        assert workdir_lib.variables_fingerprint(jax.tree.unflatten(treedef, changed)) != fingerprint
    # the same values under another name are another network
    assert workdir_lib.variables_fingerprint({"a": jnp.ones(3)}) != workdir_lib.variables_fingerprint(
        {"b": jnp.ones(3)})


# ---------------------------------------------------------------- command line

def test_missing_config_file_is_one_error_line(tmp_path):
    one_line_error(run_entry("fashion_mnist", "--config=configs/nope.py:fashion_mnist", f"--workdir={tmp_path / 'w'}"),
                    "cannot load --config: No such file or directory: 'configs/nope.py'")
    one_line_error(run_entry("fashion_mnist", "--config=configs/nope.py:fashion_mnist", "--config.seed=2",
                              f"--workdir={tmp_path / 'w'}"), "No such file or directory: 'configs/nope.py'")
    assert not os.path.exists(tmp_path / "w")


def test_config_file_with_a_syntax_error_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import ml_collections\n\ndef get_config(arg=None:\n    return None\n")
    one_line_error(run_entry("fashion_mnist", f"--config={bad}:fashion_mnist", f"--workdir={tmp_path / 'w'}"),
                    f"--config file {bad} has a syntax error at line 3")
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("raised, match", [
    ("UserError('deep in the run,\\nover two lines')", "error: deep in the run, over two lines"),
    ("OSError(errno.ENOSPC, 'No space left on device', '/w/checkpoints/7')",
     "error: No space left on device: /w/checkpoints/7"),
])
def test_failure_raised_under_the_run_is_one_error_line(tmp_path, raised, match):
    # the run itself replaced by one that raises, to reach launch.py's handler directly
    code = ("import errno, sys\n"
            "from experiments import launch\n"
            "from ddad_jax.errors import UserError\n"
            "def _run(config, workdir):\n"
            f"    raise {raised}\n"
            "launch._run = _run\n"
            "sys.argv = ['x', '--config=configs/teacher.py:fashion_mnist,smoke', '--workdir=" + str(tmp_path) + "']\n"
            "launch.run('fashion_mnist')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                            timeout=120)
    one_line_error(result, match)


@pytest.mark.slow
def test_workdir_that_is_a_file_and_bad_eval_batch_are_one_error_line(tmp_path, fmnist_smoke_teacher,
                                                                         fmnist_data_dir):
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    args = ("--config=configs/ddad.py:fashion_mnist,smoke", f"--config.teacher_dir={fmnist_smoke_teacher}",
            f"--config.data_dir={fmnist_data_dir}")
    one_line_error(run_entry("fashion_mnist", *args, f"--workdir={a_file}"), f"--workdir {a_file} is a file")
    assert a_file.read_text() == "keep me"
    one_line_error(run_entry("fashion_mnist", *args, f"--workdir={tmp_path / 'w'}", "--config.eval_batch_size=-8"),
                    "eval_batch_size must be >= 1, got -8")


# ---------------------------------------------------------------- SIGKILL and rerun

KILLS = 2
# the smoke run as it is (its compiled programs shared with the suite's other smoke DDAD runs),
# a checkpoint after every iteration
DDAD_ARGS = ("--config=configs/ddad.py:fashion_mnist,smoke", "--config.checkpoint_every=1")
ITERATIONS = 6  # 2 epochs of 2 iterations, 1 fine-tuning epoch of 2


def _ddad_command(workdir, teacher_dir, data_dir):
    return [sys.executable, "-m", "experiments.fashion_mnist", *DDAD_ARGS, f"--workdir={workdir}",
            f"--config.teacher_dir={teacher_dir}", f"--config.data_dir={data_dir}"]


def _run_and_kill(command, kill_after_step, delay, log):
    """Starts ``command``; once it has printed the progress line of iteration
    ``kill_after_step``, waits ``delay`` seconds and SIGKILLs it: a short delay lands where
    that iteration's metrics are appended and its checkpoint is written, a longer one in the
    next iteration, an evaluation or the final summary. Returns the exit status (-9 if killed)."""
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    for line in proc.stdout:
        log.append(line)
        if f" step {kill_after_step}/" in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
    proc.stdout.close()
    return proc.wait(timeout=120)


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        # wall-clock fields differ between runs; everything else must not
        return [{k: v for k, v in json.loads(line).items() if k not in ("time", "elapsed_s")} for line in f]


def _latest_checkpoint(workdir):
    ckpt_dir = os.path.join(workdir, "checkpoints")
    step = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    with ocp.StandardCheckpointer() as ckptr:  # no target: the arrays as saved
        return step, ckptr.restore(os.path.join(ckpt_dir, str(step), "default"))


@pytest.mark.slow
@pytest.mark.fault_injection
def test_sigkill_at_random_moments_then_rerun_ends_exactly_like_an_uninterrupted_run(
        tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    """Checks that a DDAD run SIGKILLed at seeded random moments (mid-iteration, while its
    metrics or checkpoint are written, in the final evaluation) and rerun with the same
    command each time ends with the very same student -- summary accuracy, every array of
    the last checkpoint, the metrics records -- as the same run left alone. 6 iterations
    (the smoke run's 2 epochs + 1 fine-tuning epoch of 2), a checkpoint after each; 4 processes
    of ~10-20 s."""
    teacher = fmnist_smoke_teacher  # a smoke teacher run (configs/teacher.py:fashion_mnist,smoke)
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    result = subprocess.run(_ddad_command(straight, teacher, fmnist_data_dir), cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    # seeded random moments: after KILLS distinct iterations of the ITERATIONS (in order, each
    # rerun resumes before its kill point), 0-0.6 s later (an iteration takes ~0.3 s)
    rng, log, statuses = np.random.default_rng(20261124), [], []
    for step in sorted(rng.choice(np.arange(1, ITERATIONS + 1), KILLS, replace=False)):
        statuses.append(_run_and_kill(_ddad_command(killed, teacher, fmnist_data_dir), step,
                                      float(rng.uniform(0.0, 0.6)), log))
    resumes = [line.strip() for line in log if "resuming from step" in line]
    print(f"exit statuses {statuses}; {resumes}")  # where the kills landed (pytest -s shows it)
    assert statuses[:-1] == [-signal.SIGKILL] * (KILLS - 1), statuses  # the last may finish first
    result = subprocess.run(_ddad_command(killed, teacher, fmnist_data_dir), cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "error:" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert any("resuming from step" in line for line in log + result.stdout.splitlines()), "".join(log)
    if statuses[-1] == -signal.SIGKILL:  # the killed run's lock is taken over, not obeyed
        assert "which is gone; taking it over" in result.stderr, result.stderr[-3000:]
    assert not os.path.exists(os.path.join(killed, "run.lock"))

    summaries = [json.load(open(os.path.join(w, "summary.json"))) for w in (straight, killed)]
    assert summaries[0]["student_acc"] == summaries[1]["student_acc"]
    (step_a, state_a), (step_b, state_b) = _latest_checkpoint(straight), _latest_checkpoint(killed)
    assert step_a == step_b == ITERATIONS
    leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(state_a), jax.tree_util.tree_leaves_with_path(state_b)
    assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
    for (path, a), (_, b) in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
    assert _records(killed) == _records(straight)
    assert not [d for d in os.listdir(os.path.join(killed, "checkpoints")) if "tmp" in d]
