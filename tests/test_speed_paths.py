"""The speed paths keep results: the CPU convolutions of ``backends/cpu.py`` (chunked, few-channel
and patches gradients), fused upsampling and max pooling equal XLA's and Flax's, the CPU device
split picks a count that divides the batch, and a DDAD iteration compiles once for a whole run,
including after a checkpoint round-trip."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import ml_collections
import pytest
from jax import lax

from ddad_jax import trainers, checkpoints, data, models, parallel, state as state_lib
from ddad_jax.backends import cpu
from ddad_jax.methods import ddad
from conftest import tiny_ddad
from configs import ddad as ddad_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((16, 12, 12, 5), (3, 3, 5, 7), (1, 1), "SAME"),
    ((12, 11, 11, 4), (5, 5, 4, 3), (1, 1), "VALID"),  # batch 12: chunks of 6
    ((16, 9, 9, 3), (3, 3, 3, 4), (2, 2), ((1, 1), (1, 1))),
])  # (test_chunk_size_divides_the_batch covers the chunk sizes of other batches)
@pytest.mark.slow
def test_chunked_weight_gradient_equals_xla(monkeypatch, shape, kernel, strides, padding):
    monkeypatch.setattr(cpu, "FEW_CHANNELS", 0)  # these shapes would take the few-channel path
    monkeypatch.setattr(cpu, "PATCHES_MAX_PIXELS", 0)  # ... or the patches weight gradient
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, shape), jax.random.normal(kw, kernel)
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(conv_fn, x, w):
        y = conv_fn(x, w, strides, padding, dimension_numbers=dn)
        return jnp.sum(jnp.sin(y) * jax.random.normal(kc, y.shape))

    ref_y = lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)
    chex.assert_trees_all_close(cpu.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn),
                                ref_y, rtol=1e-6, atol=1e-6)
    ref = jax.grad(loss, (1, 2))(lax.conv_general_dilated, x, w)
    got = jax.jit(jax.grad(loss, (1, 2)), static_argnums=0)(cpu.conv_general_dilated, x, w)
    chex.assert_trees_all_close(got, ref, rtol=1e-4, atol=1e-4)


def _conv_grads(conv_fn, x, w, strides, padding, seed=1):
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(x, w):
        y = conv_fn(x, w, strides, padding, dimension_numbers=dn)
        return jnp.sum(jnp.sin(y) * jax.random.normal(jax.random.key(seed), y.shape))

    return conv_fn(x, w, strides, padding, dimension_numbers=dn), jax.grad(loss, (0, 1))(x, w)


@pytest.mark.parametrize("shape,kernel,padding,path", [
    ((4, 12, 12, 1), (5, 5, 1, 6), "VALID", "patches"),  # LeNet's first layer
    ((2, 7, 9, 6), (2, 3, 6, 2), ((2, 0), (1, 3)), "taps"),  # uneven kernel and padding
])  # (the models' stems and the generator's last layer: test_models' cpu-ops-equal-flax test)
@pytest.mark.slow
def test_few_channel_conv_equals_xla_with_gradients(shape, kernel, padding, path):
    """Layers with few input or output channels run as windows + matmul on CPU (not XLA's
    convolution), with their own VJP; values and both gradients equal XLA's."""
    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(2), kernel)
    assert cpu._few_channel_padding(x, w, (1, 1), padding, None, None,
                                    lax.conv_dimension_numbers(shape, kernel, ("NHWC", "HWIO", "NHWC")),
                                    1, 1, None) is not None
    assert (path == "patches") == (kernel[2] <= kernel[3])
    # the path is taken: no XLA convolution is left in the forward or either gradient
    hlo = jax.jit(lambda x, w: _conv_grads(cpu.conv_general_dilated, x, w, (1, 1), padding)).lower(x, w).as_text()
    assert "stablehlo.convolution" not in hlo
    ref_y, ref_g = _conv_grads(lax.conv_general_dilated, x, w, (1, 1), padding)
    y, g = jax.jit(lambda x, w: _conv_grads(cpu.conv_general_dilated, x, w, (1, 1), padding))(x, w)
    chex.assert_trees_all_close(y, ref_y, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(g, ref_g, rtol=1e-4, atol=1e-4)


def test_few_channel_conv_is_used_only_where_it_applies():
    dn = lax.conv_dimension_numbers((2, 8, 8, 3), (3, 3, 3, 8), ("NHWC", "HWIO", "NHWC"))
    x, w, wide = jnp.zeros((2, 8, 8, 3)), jnp.zeros((3, 3, 3, 8)), jnp.zeros((3, 3, 8, 8))
    few = lambda x, w, strides=(1, 1), rhs_dilation=None: cpu._few_channel_padding(
        x, w, strides, "SAME", None, rhs_dilation, dn, 1, 1, None)
    assert few(x, w) == ((1, 1), (1, 1))
    assert few(x, w, strides=(2, 2)) is None  # strided
    assert few(x, w, rhs_dilation=(2, 2)) is None  # dilated
    assert few(jnp.zeros((2, 8, 8, 8)), wide) is None  # 8 channels in and out


@pytest.mark.parametrize("x_shape,kernel,strides,padding,path", [
    ((8, 10, 10, 1), (5, 5, 1, 6), (1, 1), "VALID", "few_channel"),
    ((8, 8, 8, 128), (3, 3, 128, 8), (2, 2), "SAME", "patches"),
    # 16 images a device: the weight gradient is summed over two chunks of 8 on each
    ((128, 8, 8, 16), (3, 3, 16, 8), (1, 1), "SAME", "chunked"),
])
def test_custom_weight_gradients_are_summed_over_devices(x_shape, kernel, strides, padding, path):
    """Inside shard_map the weight gradient of a batch shard is summed over the devices
    (the custom VJPs mark the kernel as varying), so one device and eight agree."""
    x = jax.random.normal(jax.random.key(0), x_shape)
    w = jax.random.normal(jax.random.key(1), kernel) / kernel[2]
    dn = ("NHWC", "HWIO", "NHWC")
    args = (x, w, strides, padding, None, None, lax.conv_dimension_numbers(x_shape, kernel, dn), 1, 1, None)
    chosen = "few_channel" if cpu._few_channel_padding(*args) else "patches" if cpu._patches_padding(*args) else "chunked"
    assert chosen == path
    if path == "chunked":
        assert cpu._chunk_size(x_shape[0] // 8, cpu.WEIGHT_GRAD_CHUNK) < x_shape[0] // 8

    def loss(w, x):
        y = cpu.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)
        return jax.lax.psum(jnp.sum(jnp.sin(y)), parallel.BATCH_AXIS)

    mesh = parallel.make_mesh()
    grad = jax.jit(parallel.data_parallel(jax.grad(loss), mesh, (parallel.REPLICATED, parallel.SHARDED),
                                          parallel.REPLICATED))(w, parallel.shard_batch(x, mesh))
    ref = jax.grad(lambda w: jnp.sum(jnp.sin(lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn))))(w)
    assert mesh.size == 8
    chex.assert_trees_all_close(grad, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,kernel,strides,padding", [
    ((3, 8, 8, 128), (3, 3, 128, 10), (2, 2), "SAME"),  # strided, uneven padding (0, 1)
    ((2, 11, 11, 48), (5, 5, 48, 7), (1, 1), "VALID"),  # 5x5 kernel, 7x7 output
])  # (a ResNet's stride-1 3x3 layers at 2x2 and 4x4: test_models' cpu-ops-equal-flax test)
@pytest.mark.slow
def test_patches_weight_gradient_equals_xla(shape, kernel, strides, padding):
    """Convolutions with small output maps and large patches take their weight gradient as
    one matmul of patches on CPU; values and both gradients equal XLA's."""
    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(2), kernel) / kernel[2]
    dn = lax.conv_dimension_numbers(shape, kernel, ("NHWC", "HWIO", "NHWC"))
    assert cpu._patches_padding(x, w, strides, padding, None, None, dn, 1, 1, None) is not None
    # the path is taken: the weight gradient is a matmul of patches, not XLA's convolution
    weight_grad = lambda conv: jax.jit(jax.grad(lambda w: jnp.sum(conv(x, w, strides, padding, dimension_numbers=dn) ** 2)))
    convs = lambda conv: weight_grad(conv).lower(w).as_text().count("stablehlo.convolution")
    assert convs(cpu.conv_general_dilated) < convs(lax.conv_general_dilated)
    ref_y, ref_g = _conv_grads(lax.conv_general_dilated, x, w, strides, padding)
    y, g = jax.jit(lambda x, w: _conv_grads(cpu.conv_general_dilated, x, w, strides, padding))(x, w)
    chex.assert_trees_all_close(y, ref_y, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(g, ref_g, rtol=1e-4, atol=1e-4)


def test_patches_weight_gradient_is_used_only_where_it_applies():
    """8x8 maps or smaller with patches of >= 1024 values (a CIFAR ResNet's last two stages);
    not LeNet's 5x5 layers, the generators' 9x9 and larger maps, or a ResNet's 16x16 stage."""
    def patches(x_shape, kernel, strides=(1, 1), padding="SAME"):
        dn = lax.conv_dimension_numbers(x_shape, kernel, ("NHWC", "HWIO", "NHWC"))
        return cpu._patches_padding(jnp.zeros(x_shape), jnp.zeros(kernel), strides, padding, None, None,
                                    dn, 1, 1, None)
    assert patches((16, 4, 4, 512), (3, 3, 512, 512)) == ((1, 1), (1, 1))
    assert patches((16, 16, 16, 128), (3, 3, 128, 256), strides=(2, 2)) == ((0, 1), (0, 1))
    assert patches((16, 16, 16, 128), (3, 3, 128, 128)) is None  # 16x16 output
    assert patches((32, 5, 5, 16), (5, 5, 16, 120), padding="VALID") is None  # LeNet-5's last conv: 400 values
    assert patches((32, 10, 10, 32), (2, 2, 32, 128), padding="VALID") is None  # the generator's 9x9 map


@pytest.mark.slow
@pytest.mark.parametrize("shape,features,use_bias", [((3, 7, 7, 32), 16, False), ((2, 4, 6, 5), 3, True)])
def test_upsample_conv_equals_upsampling_then_conv(shape, features, use_bias):
    """The generator's upsample + 3x3 conv, plain (``layers.UpsampleConv``) and fused
    (``cpu.UpsampleConv3x3``), equals nearest upsampling by 2 then ``conv3x3``, with the
    same parameters (values and gradients)."""
    from ddad_jax.models import layers
    x = jax.random.normal(jax.random.key(0), shape)
    up = lambda x: jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    reference = layers.conv3x3()(features, use_bias=use_bias)
    variables = reference.init(jax.random.key(1), up(x))
    if use_bias:  # a bias that is not zero
        variables = jax.tree.map(lambda p: p + 0.1, variables)
    ct = jax.random.normal(jax.random.key(2), (shape[0], 2 * shape[1], 2 * shape[2], features))
    f_ref = lambda v, x: jnp.sum(jnp.sin(reference.apply(v, up(x))) * ct)
    ref_y, ref_g = jax.jit(lambda v, x: (reference.apply(v, up(x)), jax.grad(f_ref, (0, 1))(v, x)))(variables, x)
    for module_def in (layers.UpsampleConv, cpu.UpsampleConv3x3):  # compiled: eager ops dispatch one by one
        module = module_def(features, use_bias=use_bias)
        chex.assert_trees_all_equal(module.init(jax.random.key(1), x), reference.init(jax.random.key(1), up(x)))
        f = lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)) * ct)
        y, g = jax.jit(lambda v, x: (module.apply(v, x), jax.grad(f, (0, 1))(v, x)))(variables, x)
        chex.assert_trees_all_close(y, ref_y, rtol=1e-5, atol=1e-5)
        chex.assert_trees_all_close(g, ref_g, rtol=1e-4, atol=1e-4)


def test_max_pool_equals_flax_with_gradients():
    import flax.linen as nn
    x = jax.random.normal(jax.random.key(0), (2, 10, 14, 3))  # no ties: flax's gradient picks one of them
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    chex.assert_trees_all_equal(cpu.max_pool(x, 2), ref(x))
    chex.assert_trees_all_close(jax.grad(lambda x: jnp.sum(jnp.sin(cpu.max_pool(x, 2))))(x),
                                jax.grad(lambda x: jnp.sum(jnp.sin(ref(x))))(x))
    odd = jax.random.normal(jax.random.key(1), (1, 5, 5, 2))  # does not divide: flax's pooling
    chex.assert_trees_all_equal(cpu.max_pool(odd, 2), ref(odd))


def test_chunk_size_divides_the_batch():
    assert cpu._chunk_size(128, 8) == 8
    assert cpu._chunk_size(12, 8) == 6
    assert cpu._chunk_size(7, 8) == 7 and cpu._chunk_size(13, 8) == 1


@pytest.mark.parametrize("cpu_devices,batch,preset,expected,flag", [
    (4, 128, "", 4, "--xla_force_host_platform_device_count=4"),
    (4, 6, "", 2, "--xla_force_host_platform_device_count=2"),
    (1, 128, "", 1, None),
    (4, 128, "--xla_force_host_platform_device_count=8", 4, "--xla_force_host_platform_device_count=8"),
])
def test_split_host_devices_sets_a_dividing_device_count(monkeypatch, cpu_devices, batch, preset, expected, flag):
    monkeypatch.setenv("XLA_FLAGS", preset)
    config = ml_collections.ConfigDict({"cpu_devices": cpu_devices, "batch_size": batch})
    assert parallel.split_host_devices(config) == expected
    if flag:
        assert os.environ["XLA_FLAGS"].split() == [flag]  # a flag the user gave wins
    else:
        assert os.environ["XLA_FLAGS"] == ""


def test_device_split_takes_effect_after_the_launcher_is_imported():
    """Importing the launcher (and with it jax, flax and ddad_jax) does not start JAX's backend,
    so the split it makes afterwards (``parallel.split_host_devices``) still takes effect."""
    code = ("import jax, ml_collections; from experiments import launch; from ddad_jax import parallel; "
            "parallel.split_host_devices(ml_collections.ConfigDict({'cpu_devices': 4, 'batch_size': 6})); "
            "assert jax.device_count() == 2, jax.devices()")
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)


@pytest.mark.slow
def test_iteration_compiles_once_across_a_checkpoint_round_trip(tmp_path):
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.pool_size = 3  # the batch-sharded pool goes through the checkpoint too
    # (test_synthesis' pool test compiles the same program: a hit in the suite's compilation cache)
    mesh, hp, t_model, t_vars, _, _, fresh = tiny_ddad(config, num_devices=2)
    t_vars, rng = parallel.replicate(t_vars, mesh), jax.random.key(0)
    step = ddad.make_iteration(t_model, hp, mesh, max_traces=1)
    state = trainers.place_ddad_state(fresh, hp, mesh)
    for _ in range(2):
        state, _ = step(state, t_vars, rng)
    ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(2, jax.device_get(state))
    ckpt.close()
    restored = checkpoints.Checkpointer(str(tmp_path / "ckpt")).restore(fresh)
    chex.assert_trees_all_equal(restored.pool, jax.device_get(state.pool))
    state = trainers.place_ddad_state(restored, hp, mesh)
    for _ in range(2):  # a retrace here (e.g. a weak type lost in the round trip) fails
        state, _ = step(state, t_vars, rng)
    assert int(state.step) == 4


def _ddad_history(dtype, iterations=2):
    config = ddad_config.get_config("fashion_mnist,smoke")
    spec = data.get_spec("fashion_mnist")
    mesh = parallel.make_mesh(1)  # float32: the program of test_parallel's one-device run (a cache hit in the suite)
    axis = parallel.BATCH_AXIS
    t_model = models.get_classifier("lenet5_bn", 10, bn_axis_name=axis)
    t_vars = parallel.replicate(state_lib.init_variables(t_model, jax.random.key(7), jnp.zeros((1, 32, 32, 1))), mesh)
    gen = models.get_generator(config.generator_channels, 32, 1, bn_axis_name=axis, dtype=dtype)
    student = models.get_classifier("lenet5_half", 10, bn_axis_name=axis, dtype=dtype)
    rng = jax.random.key(0)
    hp = trainers.hyper(config, spec)
    state = trainers.place_ddad_state(trainers.create_ddad_state(config, hp, spec, gen, student, rng), hp, mesh)
    step = ddad.make_iteration(t_model.clone(dtype=dtype), hp, mesh)
    history = []
    for _ in range(iterations):
        state, metrics = step(state, t_vars, rng)
        history.append(jax.device_get(metrics))
    return state, history


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_state_and_tracks_float32_losses():
    state16, hist16 = _ddad_history(jnp.bfloat16)
    _, hist32 = _ddad_history(jnp.float32)
    for leaf in jax.tree.leaves((state16.generator.params, state16.generator.batch_stats,
                                 state16.generator.opt_state, state16.student.params)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32  # master weights, optimiser state, BN statistics
    for m16, m32 in zip(hist16, hist32):
        for k in m32:
            assert jnp.isfinite(m16[k])
            assert abs(m16[k] - m32[k]) <= 0.05 * abs(m32[k]) + 0.05, (k, m16[k], m32[k])


@pytest.mark.slow
def test_bfloat16_models_compute_in_bfloat16():
    for model, x in [(models.get_classifier("wrn16_1", 10, dtype=jnp.bfloat16), jnp.ones((2, 32, 32, 3))),
                     (models.get_generator(8, 32, 1, dtype=jnp.bfloat16), jnp.ones((2, 16)))]:
        variables = jax.eval_shape(model.init, jax.random.key(0), x)  # dtypes are the point: no compute
        train = lambda v: model.apply(v, x, train=True, mutable=["batch_stats"])
        jaxpr = str(jax.make_jaxpr(train)(variables))
        assert "conv_general_dilated" in jaxpr and "bf16[" in jaxpr
        out, _ = jax.eval_shape(train, variables)
        assert out.dtype == jnp.float32
