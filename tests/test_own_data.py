"""The user's own data (a folder of images, an .npz of arrays) prepared into the tfds form and
trained on through ``experiments.custom``; and distillation runs with no data at all, which
report the student's agreement with the teacher on generated images instead of accuracy."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, assert_agreement_counted, one_line_error, run_entry, xla_flags

CLASSES = ("circle", "cross", "square")  # sorted: label ids 0, 1, 2
LEVELS = (51, 102, 153)  # every image of class k is one grey level: 0.2, 0.4, 0.6


def _write_folder(root, train=4, test=2, size=12):
    for split, n in (("train", train), ("test", test)):
        for name, level in zip(CLASSES, LEVELS):
            os.makedirs(root / split / name)
            for i in range(n):
                Image.fromarray(np.full((size, size), level, np.uint8)).save(root / split / name / f"{i}.png")
    return root


def _prepare_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": xla_flags()}
    return subprocess.run([sys.executable, "-m", "ddad_jax.data.prepare", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def _tree(path):
    """Every file under ``path`` with its size and modification time: 'untouched' means equal."""
    return sorted((os.path.relpath(os.path.join(d, f), path), os.stat(os.path.join(d, f)).st_size,
                   os.stat(os.path.join(d, f)).st_mtime_ns) for d, _, files in os.walk(path) for f in files)


def _summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


def _metric_keys(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return set().union(*(json.loads(line) for line in f))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """(image folder, data dir) with the folder prepared as the dataset 'shapes'."""
    from ddad_jax.data import custom
    tmp = tmp_path_factory.mktemp("own")
    folder, data_dir = _write_folder(tmp / "images"), str(tmp / "data")
    custom.prepare_custom("shapes", data_dir, from_folder=str(folder))
    return folder, data_dir


def test_folder_prepared_spec_by_hand(shapes):
    from ddad_jax import data
    _, data_dir = shapes
    spec = data.get_spec("shapes", data_dir)
    assert (spec.num_classes, spec.channels, spec.source_size, spec.image_size) == (3, 1, 12, 32)
    # 144 of the 1024 padded pixels carry the levels 0.2, 0.4, 0.6 equally often; the rest are 0
    share = 144 / 1024
    mean = share * (0.2 + 0.4 + 0.6) / 3
    std = np.sqrt(share * (0.04 + 0.16 + 0.36) / 3 - mean ** 2)
    assert spec.mean == pytest.approx((mean,), abs=1e-6) and spec.std == pytest.approx((std,), abs=1e-6)
    card = data.read_card("shapes", data_dir)
    assert card["class_names"] == list(CLASSES) and card["splits"] == {"train": 12, "test": 6}
    x, y = data.load_split(spec, "test", data_dir)
    assert x.shape == (6, 12, 12, 1) and sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]
    assert all(np.all(x[i] == LEVELS[y[i]]) for i in range(6))  # each image kept its label
    with pytest.raises(Exception, match="choose one of caltech101, cifar10, cifar100, fashion_mnist, shapes, or prepare"):
        data.get_spec("shapez", data_dir)


def test_arrays_grayscale_and_resized_rgb(tmp_path):
    from ddad_jax import data
    from ddad_jax.data import custom
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 8, 8), np.uint8)  # NHW: grayscale
    np.savez(tmp_path / "gray.npz", x_train=x, y_train=np.array([0, 1, 2, 0, 1, 2]), x_test=x[:2],
             y_test=np.array([1, 2]), class_names=np.array(["a", "b", "c"]))
    custom.prepare_custom("gray", str(tmp_path / "d"), from_arrays=str(tmp_path / "gray.npz"))
    spec = data.get_spec("gray", str(tmp_path / "d"))
    padded = np.pad(x / 255.0, ((0, 0), (12, 12), (12, 12)))
    assert (spec.num_classes, spec.channels, spec.source_size) == (3, 1, 8)
    assert spec.mean == pytest.approx((padded.mean(),)) and spec.std == pytest.approx((padded.std(),))
    assert data.read_card("gray", str(tmp_path / "d"))["class_names"] == ["a", "b", "c"]
    np.savez(tmp_path / "rgb.npz", x_train=rng.integers(0, 256, (4, 10, 14, 3), np.uint8), y_train=np.array([0, 1, 1, 0]))
    custom.prepare_custom("rgb", str(tmp_path / "d"), from_arrays=str(tmp_path / "rgb.npz"), image_size=16)
    spec = data.get_spec("rgb", str(tmp_path / "d"))
    assert (spec.num_classes, spec.channels, spec.source_size, len(spec.mean)) == (2, 3, 16, 3)
    assert data.load_split(spec, "train", str(tmp_path / "d"))[0].shape == (4, 16, 16, 3)


def test_images_from_32_to_224_keep_their_size_and_models_see_them_so(tmp_path):
    """48x48 arrays are kept at 48 (no padding: the statistics are the images' own), and
    --image_size=64 resizes them to 64; a run's models see that size."""
    from ddad_jax import data
    from ddad_jax.data import custom
    x = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), np.uint8)
    np.savez(tmp_path / "big.npz", x_train=x, y_train=np.array([0, 1, 0, 1]))
    custom.prepare_custom("native", str(tmp_path / "d"), from_arrays=str(tmp_path / "big.npz"))
    spec = data.get_spec("native", str(tmp_path / "d"))
    assert (spec.source_size, spec.image_size, spec.resize) == (48, 48, False)
    assert spec.mean == pytest.approx(tuple((x / 255.0).mean(axis=(0, 1, 2))))
    assert spec.std == pytest.approx(tuple((x / 255.0).std(axis=(0, 1, 2))))
    assert data.normalize(x, spec).shape == (4, 48, 48, 3)
    custom.prepare_custom("up", str(tmp_path / "d"), from_arrays=str(tmp_path / "big.npz"), image_size=64)
    spec = data.get_spec("up", str(tmp_path / "d"))
    assert (spec.source_size, spec.image_size) == (64, 64)
    assert data.load_split(spec, "train", str(tmp_path / "d"))[0].shape == (4, 64, 64, 3)


def _bad_input(tmp_path, case):
    """The source of one bad input, written under ``tmp_path``: (flag, path)."""
    arrays = {"x_train": np.zeros((4, 8, 8), np.uint8), "y_train": np.array([0, 1, 0, 1])}
    if case == "no_images":
        (tmp_path / "empty" / "cat").mkdir(parents=True)
        (tmp_path / "empty" / "cat" / "notes.txt").write_text("not an image")
        return "--from_folder", tmp_path / "empty"
    if case == "one_class":
        (tmp_path / "one" / "cat").mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "one" / "cat" / "0.png")
        return "--from_folder", tmp_path / "one"
    if case == "mixed_sizes":
        for name, size in (("a", 8), ("b", 10)):
            (tmp_path / "mixed" / name).mkdir(parents=True)
            Image.fromarray(np.zeros((size, size), np.uint8)).save(tmp_path / "mixed" / name / "0.png")
        return "--from_folder", tmp_path / "mixed"
    if case == "too_large":
        arrays["x_train"] = np.zeros((4, 226, 226), np.uint8)
    elif case == "float_images":
        arrays["x_train"] = arrays["x_train"].astype(np.float32)
    elif case == "wrong_shape":
        arrays["x_train"] = np.zeros((4, 8, 8, 5), np.uint8)
    elif case == "label_out_of_range":
        arrays.update(x_test=arrays["x_train"][:1], y_test=np.array([7]))
    elif case == "length_mismatch":
        arrays["y_train"] = np.array([0, 1, 0])
    np.savez(tmp_path / "a.npz", **arrays)
    return "--from_arrays", tmp_path / "a.npz"


@pytest.mark.parametrize("name, case, match", [
    ("new", "no_images", "no images in"), ("new", "one_class", "only one class ('cat')"),
    ("new", "mixed_sizes", "images differ in size"), ("new", "float_images", "must be uint8 images"),
    ("new", "wrong_shape", "must be NHWC with 1 or 3 channels"), ("new", "label_out_of_range", "labels must be 0..1"),
    ("new", "length_mismatch", "y_train has 3 labels for 4 images"), ("shapes", "one_class", "pass --force"),
    ("new", "too_large", "built for at most 224x224: pass --image_size=N"),
])
def test_bad_input_is_one_line_and_leaves_the_data_dir(tmp_path, shapes, name, case, match):
    _, data_dir = shapes
    before = _tree(data_dir)
    flag, path = _bad_input(tmp_path, case if name == "new" else "mixed_sizes")
    one_line_error(_prepare_cli(name, f"{flag}={path}", f"--data_dir={data_dir}"), match)
    assert _tree(data_dir) == before


@pytest.mark.slow
def test_own_teacher_trains_and_its_card_carries_the_spec(tmp_path, shapes):
    """A teacher trained on the folder through experiments.custom; its card carries the
    dataset's spec, which is all a distillation run with the teacher alone (no data) needs."""
    from configs import ddad
    from ddad_jax import data
    from ddad_jax.trainers.common import dataset_spec
    _, data_dir = shapes
    teacher_dir = str(tmp_path / "teacher")
    result = run_entry("custom", "--config=configs/teacher.py:shapes,smoke", f"--workdir={teacher_dir}",
                       f"--config.data_dir={data_dir}", "--config.model=lenet5_bn", "--config.batch_size=4",
                       "--config.cpu_devices=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[teacher] done: lenet5_bn on shapes: test accuracy" in result.stdout
    card = json.load(open(os.path.join(teacher_dir, "teacher.json")))
    # the card's accuracy is the exported teacher's on the folder's test split, counted here
    from ddad_jax import teacher as teacher_lib
    spec = data.get_spec("shapes", data_dir)
    images, labels = data.load_split(spec, "test", data_dir)
    model, variables, _ = teacher_lib.load_teacher(teacher_dir, "lenet5_bn", "shapes", spec=spec)
    predicted = np.argmax(np.asarray(model.apply(variables, data.normalize(images, spec))), -1)
    assert card["test_acc"] == pytest.approx(float(np.mean(predicted == labels)), abs=1e-6)
    config = ddad.get_config("shapes,smoke")
    config.teacher_dir, config.data_dir = teacher_dir, str(tmp_path / "empty")
    assert dataset_spec(config) == data.get_spec("shapes", data_dir)


@pytest.mark.slow
def test_ddad_with_no_data_reports_agreement(tmp_path, fmnist_smoke_teacher):
    (tmp_path / "empty").mkdir()
    result = run_entry("fashion_mnist", "--config=configs/fmnist_lenet5.py:smoke", f"--workdir={tmp_path / 'w'}",
                       f"--config.data_dir={tmp_path / 'empty'}", f"--config.teacher_dir={fmnist_smoke_teacher}",
                       "--config.num_epochs=1", "--config.finetune_epochs=0", "--config.sample_grid=0",
                       "--config.cpu_devices=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[ddad] done: student lenet5_half agreement with the teacher on generated images" in result.stdout
    summary = _summary(tmp_path / "w")
    assert summary["student_acc"] is None and summary["teacher_acc"] is None
    assert os.listdir(tmp_path / "empty") == []
    assert_agreement_counted(summary, tmp_path / "w", images=8 * 16)  # AGREEMENT_BATCHES smoke batches
    keys = _metric_keys(tmp_path / "w")
    assert "generated/student_agreement" in keys and not any(k.startswith("test/") for k in keys)


@pytest.mark.slow
def test_inversion_with_evaluation_switched_off(tmp_path, fmnist_smoke_teacher, fmnist_data_dir):
    """``eval_examples = 0`` switches the test split off even where it is prepared."""
    from configs import deepinversion
    from ddad_jax import loop
    config = deepinversion.get_config("fashion_mnist,smoke")
    config.teacher_dir, config.data_dir, config.eval_examples = fmnist_smoke_teacher, fmnist_data_dir, 0
    config.num_devices, config.sample_grid, config.num_epochs = 1, 0, 1
    summary = loop.train_and_evaluate(config, str(tmp_path / "w"))
    assert summary["student_acc"] is None and summary["teacher_acc"] is None
    assert_agreement_counted(summary, tmp_path / "w", images=config.batch_size)  # the latest synthesised batch


def test_generator_agreement_counts_every_batch_by_hand():
    """Agreement is the share of all the fixed latents' images (each batch one generator call)
    on which the student's top-1 class is the teacher's: with a student that always answers
    class 0 it is exactly the share of those images the teacher puts in class 0."""
    import types
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from ddad_jax.trainers.common import generator_agreement

    class Gen(nn.Module):  # latents -> 'images' (the first 4 latent dims); no parameters
        bn_axis_name: object = None

        @nn.compact
        def __call__(self, z, train=True):
            return z[..., :4]

    class Linear(nn.Module):
        bn_axis_name: object = None

        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(3, use_bias=False)(x)

    z = jax.random.normal(jax.random.key(0), (3, 5, 4))  # 3 batches of 5
    teacher = Linear()
    t_vars = teacher.init(jax.random.key(1), z[0])
    state = types.SimpleNamespace(generator=types.SimpleNamespace(params={}, batch_stats={}),
                                  student=types.SimpleNamespace(params={"Dense_0": {"kernel": jnp.array(
                                      [[0.0, 0, 0]] * 4)}}, batch_stats={}))
    # a zero kernel: all logits 0, so argmax is class 0 on every image
    agreement = generator_agreement(Gen(), teacher, t_vars, Linear(), z)(state)
    teacher_top1 = np.argmax(np.asarray(z).reshape(15, 4) @ np.asarray(t_vars["params"]["Dense_0"]["kernel"]), -1)
    assert agreement == pytest.approx(np.mean(teacher_top1 == 0), abs=1e-6)
    assert 0 < np.mean(teacher_top1 == 0) < 1  # the case distinguishes 'all' and 'none'


@pytest.mark.parametrize("args, match", [
    (("own", "--image_size=300"), "built for at most 224x224"),
    (("fashion_mnist", "--image_size=64"), "apply to your own images"),
])
def test_image_size_outside_what_models_take_is_one_line(tmp_path, args, match):
    np.savez(tmp_path / "a.npz", x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, 0, 1]))
    extra = (f"--from_arrays={tmp_path / 'a.npz'}",) if args[0] == "own" else ()
    one_line_error(_prepare_cli(*args, *extra, f"--data_dir={tmp_path / 'd'}"), match)
    assert not (tmp_path / "d").exists()
