import chex
import jax
import jax.numpy as jnp
import pytest

from ddad_jax import models, state as state_lib
from ddad_jax.errors import UserError


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
def test_classifier_shapes(name, channels, num_classes, expected_params, has_bn):
    model = models.get_classifier(name, num_classes)
    x = jnp.ones((2, 32, 32, channels))
    variables = model.init(jax.random.key(0), x)
    chex.assert_shape(model.apply(variables, x), (2, num_classes))
    out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"]) if has_bn else (None, None)
    if has_bn:
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


@pytest.mark.parametrize("size,channels,base", [(32, 3, 16), (32, 1, 8), (28, 1, 4)])
def test_generator_shape_and_normalised_output(size, channels, base):
    gen = models.Generator(base_channels=base, image_size=size, channels=channels)
    z = jax.random.normal(jax.random.key(0), (16, 12))
    variables = gen.init(jax.random.key(1), z)
    images, _ = gen.apply(variables, z, train=True, mutable=["batch_stats"])
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
