"""Shared fixtures. Eight fake CPU devices are set up before JAX starts, so data-parallel
code runs here as on an 8-chip host; tests that want one device ask for a 1-device mesh."""

import os
import subprocess
import sys

# XLA flags for every JAX process of the suite (tests/run_all.sh sets them: a lower LLVM
# optimisation level, as compiling, not running, is most of the suite's time).
TEST_XLA_FLAGS = os.environ.get("DDAD_TEST_XLA_FLAGS", "").strip()


def xla_flags(devices=None) -> str:
    """``XLA_FLAGS`` for a process of the suite: the suite's flags, and ``devices`` CPU devices
    when given (else the process decides: one, or its launcher's split)."""
    count = f" --xla_force_host_platform_device_count={devices}" if devices else ""
    return (TEST_XLA_FLAGS + count).strip()


os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(8)).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_SOURCE = "/usr/share/datasets/fashion-mnist"


def pytest_collection_modifyitems(items):
    """Tests marked ``slow`` (each ~40 s or more alone) go first: the two xdist workers then
    end on short tests and finish close together, instead of one waiting on the other's
    last long test. The order of everything else is unchanged."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def fmnist_data_dir(tmp_path_factory):
    """Real Fashion-MNIST prepared by our tfds builder (reuses $DDAD_TEST_DATA_DIR if set)."""
    if not os.path.exists(os.path.join(FMNIST_SOURCE, "t10k-images-idx3-ubyte.gz")):
        pytest.fail("Fashion-MNIST source files missing: apt-get install dataset-fashion-mnist "
                    "(tests/run_all.sh does this)")
    from ddad_jax.data.prepare import prepare
    data_dir = os.environ.get("DDAD_TEST_DATA_DIR") or str(tmp_path_factory.mktemp("tfds"))
    prepare("fashion_mnist", data_dir)
    return data_dir


@pytest.fixture(scope="session")
def cifar_data_dir(tmp_path_factory):
    """Stand-in CIFAR-10/100 (random images) in the stock tfds format."""
    from ddad_jax.data.standin import write_cifar_standin
    data_dir = str(tmp_path_factory.mktemp("cifar_standin"))
    write_cifar_standin("cifar10", data_dir)
    write_cifar_standin("cifar100", data_dir)
    return data_dir


def one_line_error(result, match):
    """``result`` (a ``run_entry``) failed as every user error must: exit 2, one ``error:``
    line containing ``match``, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and match in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def assert_agreement_counted(summary, workdir, images):
    """A run without a test split reports the student's top-1 agreement with the teacher: a
    share of ``images`` counted images (a whole number of them agree) -- not any value in
    [0, 1] -- and the one its metrics logged last."""
    import json  # pylint: disable=import-outside-toplevel
    agreement = summary["student_agreement"]
    agreeing = agreement * images
    assert abs(agreeing - round(agreeing)) < 1e-3 * images ** 0.5 and 0 <= round(agreeing) <= images, (agreement, images)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [m["generated/student_agreement"] for m in map(json.loads, f) if "generated/student_agreement" in m]
    assert logged and abs(logged[-1] - agreement) < 1e-6, (logged, agreement)


def run_entry(dataset, *args, env=None, timeout=600):
    """Runs ``python -m experiments.<dataset> ARGS`` from the repo root."""
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags(), **(env or {})}  # one CPU device unless asked
    return subprocess.run([sys.executable, "-m", f"experiments.{dataset}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def fmnist_smoke_teacher(tmp_path_factory, fmnist_data_dir):
    """A tiny LeNet-5 (BN) teacher trained in-process for a few steps on real Fashion-MNIST."""
    from configs import teacher as teacher_config
    from ddad_jax import loop
    workdir = str(tmp_path_factory.mktemp("fmnist_teacher"))
    config = teacher_config.get_config("fashion_mnist,smoke")
    config.data_dir = fmnist_data_dir
    config.num_devices = 1
    loop.train_and_evaluate(config, workdir)
    return workdir


def train_until_interrupted(run, workdir, at_step):
    """``loop.train(run, workdir)`` interrupted (KeyboardInterrupt) as step ``at_step`` begins:
    what an interrupted run leaves behind, for a rerun to resume."""
    import pytest
    from ddad_jax import loop
    step = run.step

    def interrupted(n, state):
        if n == at_step:
            raise KeyboardInterrupt
        return step(n, state)

    run.step = interrupted
    with pytest.raises(KeyboardInterrupt):
        loop.train(run, workdir)


def tiny_ddad(config, num_devices=1, rng=0):
    """A tiny Fashion-MNIST-shaped DDAD setup for unit tests: (mesh, hp, teacher model, teacher
    variables (a random LeNet-5 BN with non-trivial running statistics), generator, student,
    a fresh DDAD state on the host) from ``config``."""
    import jax
    import jax.numpy as jnp
    from ddad_jax import trainers, data, models, parallel
    from ddad_jax.state import init_variables

    mesh = parallel.make_mesh(num_devices)
    spec = data.get_spec("fashion_mnist")
    t_model = models.get_classifier("lenet5_bn", 10, bn_axis_name=parallel.BATCH_AXIS)
    t_vars = init_variables(t_model, jax.random.key(7), jnp.zeros((1, 32, 32, 1)))
    t_vars = {**t_vars, "batch_stats": jax.tree.map(lambda x: x + 0.5, t_vars["batch_stats"])}
    gen = models.get_generator(config.generator_channels, 32, 1, bn_axis_name=parallel.BATCH_AXIS)
    student = models.get_classifier("lenet5_half", 10, bn_axis_name=parallel.BATCH_AXIS)
    hp = trainers.hyper(config, spec)
    state = trainers.create_ddad_state(config, hp, spec, gen, student, jax.random.key(rng))
    return mesh, hp, t_model, t_vars, gen, student, state


@pytest.fixture(scope="session")
def cifar_random_teachers(tmp_path_factory):
    """Exported WRN-16-1 teachers (the smoke configs' CIFAR teacher) for CIFAR-10 and CIFAR-100,
    randomly initialised with non-trivial running statistics: enough to run a method's steps
    (its accuracy is not the point), without training one. {dataset: teacher_dir}."""
    import jax
    import jax.numpy as jnp
    from ddad_jax import data, models, teacher
    from ddad_jax.state import init_variables

    dirs = {}
    for dataset in ("cifar10", "cifar100"):
        spec = data.get_spec(dataset)
        model = models.get_classifier("wrn16_1", spec.num_classes)
        variables = init_variables(model, jax.random.key(3), jnp.zeros((1, 32, 32, 3)))
        variables = {**variables, "batch_stats": jax.tree.map(lambda x: x + 0.3, variables["batch_stats"])}
        dirs[dataset] = str(tmp_path_factory.mktemp(f"{dataset}_teacher"))
        teacher.export(dirs[dataset], variables, {"model": "wrn16_1", "dataset": dataset, "test_acc": 0.0})
    return dirs
