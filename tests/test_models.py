import ast
import glob
import os
import subprocess
import sys
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from ddad_jax import backends, models, state as state_lib
from ddad_jax.backends import cpu
from ddad_jax.errors import UserError
from ddad_jax.models import imagenet, layers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def n_params(variables):
    return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name,channels,num_classes,expected_params,has_bn", [
    ("lenet5", 1, 10, 61_706, False),  # DAFL's LeNet-5: 61.7K parameters
    ("lenet5_half", 1, 10, 15_738, False),
    ("lenet5_bn", 1, 10, 61_706 + 2 * (6 + 16 + 120), True),
    ("lenet5_half_bn", 1, 10, 15_738 + 2 * (3 + 8 + 60), True),
    ("wrn16_1", 3, 10, 175_066, True),
    ("wrn16_2", 3, 100, None, True),
    ("wrn40_2", 3, 10, None, True),
])
@pytest.mark.slow
def test_classifier_shapes(name, channels, num_classes, expected_params, has_bn):
    model = models.get_classifier(name, num_classes)
    x = jnp.ones((2, 32, 32, channels))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: no compute
    chex.assert_shape(jax.eval_shape(model.apply, variables, x), (2, num_classes))
    if has_bn:
        out, _ = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables)
        chex.assert_shape(out, (2, num_classes))
    assert ("batch_stats" in variables) == has_bn
    if expected_params:
        assert n_params(variables) == expected_params


@pytest.mark.parametrize("name,expected_params", [("resnet18", 11_173_962), ("resnet34", 21_282_122)])
def test_cifar_resnets_shapes(name, expected_params):
    model = models.get_classifier(name, 10)
    x = jnp.ones((1, 32, 32, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: no compute
    out = jax.eval_shape(model.apply, variables, x)
    chex.assert_shape(out, (1, 10))
    assert n_params(variables) == expected_params


@pytest.mark.slow
@pytest.mark.parametrize("size,channels,base", [(32, 3, 16), (32, 1, 8), (28, 1, 4)])
def test_generator_shape_and_normalised_output(size, channels, base):
    gen = models.Generator(base_channels=base, image_size=size, channels=channels)
    z = jax.random.normal(jax.random.key(0), (16, 12))
    variables = jax.jit(gen.init)(jax.random.key(1), z)
    images, _ = jax.jit(lambda v, z: gen.apply(v, z, train=True, mutable=["batch_stats"]))(variables, z)
    chex.assert_shape(images, (16, size, size, channels))
    # the final affine-free BatchNorm standardises each channel over the batch
    chex.assert_trees_all_close(images.mean(axis=(0, 1, 2)), jnp.zeros(channels), atol=1e-4)
    chex.assert_trees_all_close(images.std(axis=(0, 1, 2)), jnp.ones(channels), atol=1e-2)


def test_compiled_init_equals_model_init():
    model = models.get_classifier("lenet5_half_bn", 10)
    x = jnp.zeros((1, 32, 32, 1))
    compiled = state_lib.init_variables(model, jax.random.key(3), x)
    chex.assert_trees_all_close(compiled, model.init(jax.random.key(3), x), rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal_shapes_and_dtypes(compiled, jax.eval_shape(model.init, jax.random.key(3), x))


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UserError, match="unknown model 'vgg'"):
        models.get_classifier("vgg", 10)


def test_ops_follow_the_backend():
    assert backends.ops_for("cpu") is cpu.OPS
    assert backends.ops_for("gpu") is backends.PLAIN and backends.ops_for("tpu") is backends.PLAIN
    assert backends.ops_for() is cpu.OPS  # the tests run on CPU
    assert models.get_classifier("lenet5", 10).conv is cpu.OPS.conv
    assert models.get_classifier("lenet5", 10, ops=backends.PLAIN).max_pool is backends.PLAIN.max_pool
    assert models.get_generator(8, 32, 1).upsample_conv is cpu.UpsampleConv3x3
    assert models.get_generator(8, 32, 1, ops=backends.PLAIN).upsample_conv is layers.UpsampleConv
    assert backends.scan_unroll(5) == 5


def _both(build, x):
    """Initial variables of ``build(ops)`` for PLAIN and cpu.OPS, as abstract shapes (no compute)."""
    return [jax.eval_shape(build(ops).init, jax.random.key(0), x) for ops in (backends.PLAIN, cpu.OPS)]


@pytest.mark.parametrize("name", models.CLASSIFIERS)
def test_classifier_parameters_are_the_same_on_every_backend(name):
    """A checkpoint written on a CPU host (cpu.OPS) loads on a GPU (PLAIN) and back."""
    channels = 1 if name.startswith("lenet") else 3
    plain, fast = _both(lambda ops: models.get_classifier(name, 10, ops=ops), jnp.zeros((1, 32, 32, channels)))
    chex.assert_trees_all_equal_shapes_and_dtypes(plain, fast)  # also checks the tree (module names)


@pytest.mark.parametrize("size,channels", [(32, 3), (32, 1), (28, 1)])
def test_generator_parameters_are_the_same_on_every_backend(size, channels):
    plain, fast = _both(lambda ops: models.get_generator(8, size, channels, ops=ops), jnp.zeros((1, 16)))
    chex.assert_trees_all_equal_shapes_and_dtypes(plain, fast)


class _InvertedResiduals(nn.Module):
    """A stride-2 stem and two of MobileNetV2's blocks (one strided, one dilated by 2)."""
    conv: Any = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = imagenet.InvertedResidual(8, 2, 1, conv=self.conv)(x, train)
        x = imagenet.InvertedResidual(16, 2, 6, conv=self.conv)(x, train)
        x = imagenet.InvertedResidual(16, 1, 6, dilation=2, conv=self.conv)(x, train)
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


def _outputs_and_grads(model, variables, x):
    """Train-mode outputs, new BN statistics, and gradients of a loss w.r.t. params and input."""
    def loss(params, x):
        out, new_state = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        weights = jax.random.normal(jax.random.key(5), out.shape)
        return jnp.sum(jnp.sin(out) * weights), (out, new_state)

    (_, aux), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(variables["params"], x)
    return aux, grads


@pytest.mark.parametrize("build,x_shape", [
    (lambda ops: models.get_classifier("lenet5_bn", 10, ops=ops), (16, 32, 32, 1)),
    # batch 16 at 16x16: the stem takes the few-channel path, the 2x2 and 4x4 stages the patches
    # weight gradient, the others the chunked one (chunks of 8)
    (lambda ops: models.CifarResNet((1, 1, 1, 1), conv=ops.conv), (16, 16, 16, 3)),
    (lambda ops: models.get_classifier("wrn16_1", 10, ops=ops), (16, 16, 16, 3)),
    (lambda ops: models.get_generator(8, 16, 1, ops=ops), (16, 12)),
    # MobileNetV2's parts: strided explicit-padding, depthwise (grouped) and dilated convolutions
    (lambda ops: _InvertedResiduals(conv=ops.conv), (16, 16, 16, 3)),
], ids=["lenet5_bn", "resnet_1111", "wrn16_1", "generator", "inverted_residuals"])
@pytest.mark.slow
def test_cpu_ops_compute_what_plain_flax_computes(build, x_shape):
    """The same variables give the same outputs, BN statistics and gradients with PLAIN and
    cpu.OPS (to float32 rounding: the sums run in another order)."""
    x = jax.random.normal(jax.random.key(1), x_shape)
    plain, fast = build(backends.PLAIN), build(cpu.OPS)
    variables = jax.jit(plain.init)(jax.random.key(0), x)  # compiled: eager init dispatches op by op
    chex.assert_trees_all_equal(variables, jax.jit(fast.init)(jax.random.key(0), x))
    got, ref = _outputs_and_grads(fast, variables, x), _outputs_and_grads(plain, variables, x)
    chex.assert_trees_all_close(got, ref, rtol=1e-4, atol=1e-4)


def test_models_do_not_depend_on_parallel():
    """The models are plain Flax: nothing under ddad_jax/models imports ddad_jax.parallel,
    directly or through what it imports (backends included)."""
    models_dir = os.path.dirname(models.__file__)
    for path in glob.glob(os.path.join(models_dir, "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith("ddad_jax.parallel") for n in names), (path, names)
    # backends first, then models: the import cycle (models' registry -> backends -> models.layers) resolves
    code = ("import sys; import ddad_jax.backends.cpu; import ddad_jax.models; "
            "assert 'ddad_jax.parallel' not in sys.modules, sorted(m for m in sys.modules if 'ddad' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("model,strides", [
    (models.ResNet((1, 1, 1, 1)), (4, 8, 16, 32)),
    (models.ResNet((1, 1, 1, 1), bottleneck=True, replace_stride_with_dilation=(False, True, True)), (4, 8, 8, 8)),
    (models.MobileNetV2(width=0.35), (4, 8, 16, 32)),
    (models.MobileNetV2(width=0.35, output_stride=16), (4, 8, 16, 16)),
])
@pytest.mark.parametrize("size", [64, 96, 224])
def test_imagenet_backbones_take_any_size_and_dilate_instead_of_striding(model, strides, size):
    """Logits for any input size (global pooling); each stage's map (the sown ``attention``
    features) at the output stride torchvision's dilation options give."""
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    logits, sown = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["features"]), variables, x)
    assert logits.shape == (2, 1000)
    maps = [sown["features"][f"attention{i + 1}"].shape[1] for i in range(4)]
    assert maps == [-(-size // s) for s in strides], maps
