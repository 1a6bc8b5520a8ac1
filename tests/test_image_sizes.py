"""Beyond 32x32: generators whose doublings follow the image size, DFAD's large generator, and
the generator methods (DDAD, DFAD, DFQ) run at 64 and 128 pixels, split over 1 and 8 devices
with equal results."""

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddad_jax import data, models, teacher, trainers
from ddad_jax.errors import UserError
from ddad_jax.models import generator as generator_lib
from ddad_jax.state import init_variables


def test_generator_doublings_follow_the_image_size():
    # halve while even and above 8, at least twice: 32 -> 16 -> 8; 224 -> 112 -> 56 -> 28 -> 14 -> 7
    assert {s: generator_lib.upsamplings(s) for s in (28, 32, 64, 128, 224, 8)} == {
        28: 2, 32: 2, 64: 3, 128: 4, 224: 5, 8: 2}
    with pytest.raises(ValueError, match="multiple of 4"):
        generator_lib.upsamplings(30)
    z = jnp.zeros((2, 16))
    for arch, size, convs in (("dafl", 32, 3), ("dafl", 64, 4), ("dafl", 224, 6), ("dfad_large", 128, 1)):
        g = models.get_generator(8, size, 3, arch=arch)
        variables = jax.eval_shape(g.init, jax.random.key(0), z)
        out = jax.eval_shape(lambda v, z, g=g: g.apply(v, z, mutable=["batch_stats"])[0], variables, z)
        assert out.shape == (2, size, size, 3)
        assert len([k for k in variables["params"] if k.startswith("Conv_")]) == convs
    # at 32x32 exactly DAFL's network: 2c channels at 8x8, doubled twice (2c, then c)
    params = jax.eval_shape(models.get_generator(8, 32, 1).init, jax.random.key(0), z)["params"]
    assert params["Dense_0"]["kernel"].shape == (16, 16 * 8 * 8)
    assert [params[f"Conv_{i}"]["kernel"].shape for i in range(3)] == [(3, 3, 16, 16), (3, 3, 16, 8), (3, 3, 8, 1)]
    # DFAD's large generator: 8c at S/16, four transposed convolutions (4c, 2c, c, c)
    params = jax.eval_shape(models.get_generator(8, 128, 3, arch="dfad_large").init, jax.random.key(0), z)["params"]
    assert params["Dense_0"]["kernel"].shape == (16, 64 * 8 * 8)
    assert [params[f"ConvTranspose_{i}"]["kernel"].shape[-1] for i in range(4)] == [32, 16, 8, 8]
    with pytest.raises(UserError, match="image size 256 is outside"):
        models.get_generator(8, 256, 3)
    with pytest.raises(UserError, match="unknown generator 'big'"):
        models.get_generator(8, 64, 3, arch="big")


def _sized_run(method, size, num_devices, arch="dafl"):
    """``configs/<method>.py:fashion_mnist,smoke`` on Fashion-MNIST-shaped images of ``size``
    pixels (a spec handed over in Python), from a random LeNet-5 (BN) teacher provided in Python,
    with no data: one iteration's metrics and generator parameters."""
    spec = data.register_spec(dataclasses.replace(data.get_spec("fashion_mnist"), name=f"fmnist{size}",
                                                  source_size=size, image_size=size))
    model = models.get_classifier("lenet5_bn", 10)
    variables = init_variables(model, jax.random.key(3), jnp.zeros((1, size, size, 1)))
    variables = {**variables, "batch_stats": jax.tree.map(lambda x: x + 0.3, variables["batch_stats"])}
    config = importlib.import_module(f"configs.{method}").get_config("fashion_mnist,smoke")
    config.dataset, config.num_devices, config.eval_examples, config.sample_grid = spec.name, num_devices, 0, 0
    config.generator_arch = arch
    config.teacher_dir = teacher.provide(f"lenet{size}", model, variables, {"model": "lenet5_bn", "dataset": spec.name})
    run = trainers.build(config)
    state, metrics = run.step(1, run.place(run.state))
    assert config.generator_lr == 1e-3  # the bound below
    return jax.device_get(metrics), jax.device_get(state.generator.params)


@pytest.mark.slow
# DDAD at both sizes; DFAD and DFQ (DDAD-shaped: only their generator terms differ, and no term
# depends on the size) at one each, to keep the suite's time
@pytest.mark.parametrize("method,size", [("ddad", 64), ("ddad", 128), ("dfad", 128), ("dfq", 64)])
def test_generator_methods_run_at_larger_sizes_on_one_and_eight_devices_alike(method, size):
    one, one_params = _sized_run(method, size, 1)
    eight, eight_params = _sized_run(method, size, 8)
    assert all(np.isfinite(v) for v in jax.tree.leaves(one)) and "gen/loss" in one
    # losses are means over 16 images of up to 128x128 pixels: summed in another order on 8 devices
    np.testing.assert_allclose([one[k] for k in sorted(one)], [eight[k] for k in sorted(one)], rtol=1e-3, atol=1e-5)
    # Adam's first step moves each weight by about lr * sign(gradient): a gradient within rounding
    # of zero may step either way, so a few weights (never more than 1 in 500) may differ by up to
    # 2 lr; every other weight agrees to float32 rounding
    for a, b in zip(jax.tree.leaves(one_params), jax.tree.leaves(eight_params)):
        off = ~np.isclose(a, b, rtol=2e-3, atol=2e-5)
        assert off.mean() <= 2e-3 and np.abs(a - b).max() <= 2 * 1e-3 + 1e-6, (off.sum(), np.abs(a - b).max())


@pytest.mark.slow
def test_ddad_with_dfads_large_generator_at_128():
    metrics, params = _sized_run("ddad", 128, 1, arch="dfad_large")
    assert "ConvTranspose_3" in params and np.isfinite(metrics["gen/loss"])


def test_caltech101_crops_and_split_by_hand():
    """DFAD's input: shorter side to 128, centre 128x128 (grayscale becomes RGB); its split:
    20 % of each class for test, at least 2, the same draw every time."""
    from PIL import Image
    from ddad_jax.data import caltech101
    image = np.random.default_rng(0).integers(0, 256, (100, 200, 3), np.uint8)  # H x W
    expected = np.asarray(Image.fromarray(image).resize((256, 128), Image.BILINEAR))[:, 64:192]
    np.testing.assert_array_equal(caltech101.centre_square(image), expected)
    assert caltech101.centre_square(image[..., :1]).shape == (128, 128, 3)
    labels = np.repeat([0, 1, 2], [40, 10, 3])
    test = caltech101.test_mask(labels)
    assert [int(test[labels == c].sum()) for c in range(3)] == [8, 2, 2]
    np.testing.assert_array_equal(test, caltech101.test_mask(labels))
    with pytest.raises(UserError, match="class 0 has 2 images"):
        caltech101.test_mask(np.array([0, 0, 1, 1, 1]))


@pytest.mark.slow
def test_caltech101_prepared_from_tfds_then_its_teacher_trains_at_128(tmp_path):
    """``data.prepare caltech101`` on a stand-in of tfds's download (102 labels, images of any
    size): 101 object classes at 128x128, and the teacher config trains on it. (DDAD and DFAD
    at 128 with DFAD's generator run in the tests above; their Caltech101 configs below.)"""
    import json
    import os
    from conftest import run_entry
    from test_own_data import _prepare_cli
    from ddad_jax.data import standin
    data_dir = str(tmp_path / "tfds")
    standin.write_caltech101_standin(data_dir)  # 4 images per label, background included
    result = _prepare_cli("caltech101", f"--data_dir={data_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    spec = data.get_spec("caltech101")
    x, y = data.load_split(spec, "test", data_dir)
    assert x.shape == (202, 128, 128, 3) and np.bincount(y).tolist() == [2] * 101
    assert data.load_split(spec, "train", data_dir)[0].shape == (202, 128, 128, 3)
    again = _prepare_cli("caltech101", f"--data_dir={data_dir}")
    assert again.returncode == 2 and "pass --force" in again.stderr
    teacher_dir = str(tmp_path / "teacher")
    result = run_entry("caltech101", "--config=configs/teacher.py:caltech101,smoke", f"--workdir={teacher_dir}",
                       f"--config.data_dir={data_dir}", "--config.cpu_devices=1")
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.load(open(os.path.join(teacher_dir, "teacher.json")))
    assert card["dataset"] == "caltech101" and card["dataset_spec"]["image_size"] == 128


def test_caltech101_configs_are_dfads_protocol():
    """ResNet-34 -> ResNet-18 at 128 (DFAD's generator, latent 256), batch 64, 300 x 50
    iterations, 5 student steps a generator step, SGD 0.1 / Adam 1e-3, x0.1 at 100 and 200."""
    from configs import dfad, ddad, teacher as teacher_config
    for config in (ddad.get_config("caltech101"), dfad.get_config("caltech101")):
        assert (config.dataset, config.teacher, config.student) == ("caltech101", "resnet34_imagenet",
                                                                    "resnet18_imagenet")
        assert (config.generator_arch, config.latent_dim, config.batch_size) == ("dfad_large", 256, 64)
        assert (config.num_epochs, config.iters_per_epoch, config.student_steps_per_generator_step) == (300, 50, 5)
        assert (config.student_lr, config.generator_lr, tuple(config.lr_milestones)) == (0.1, 1e-3, (100, 200))
    assert dict(dfad.get_config("caltech101").generator_terms) == {"adversarial": 1.0}
    assert teacher_config.get_config("caltech101").model == "resnet34_imagenet"
