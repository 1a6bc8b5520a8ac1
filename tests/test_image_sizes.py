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
