"""The speed benchmark compares like with like: ``benchmarks/torch_ddad.py`` (the PyTorch
eager reference) and ddad_jax compute the same losses and the same updates for the same
weights and latents."""

import jax
import numpy as np
import torch

from configs import ddad as ddad_config
from conftest import tiny_ddad
from ddad_jax import trainers, parallel, state as state_lib
from ddad_jax.methods import ddad
from ddad_jax.methods.frozen_teacher import Teacher
from benchmarks.torch_ddad import DDADIteration


def _t(x):
    return torch.from_numpy(np.array(x, np.float32))


def _load_conv(conv, p):
    conv.weight.data = _t(np.transpose(p["kernel"], (3, 2, 0, 1)))  # HWIO -> OIHW
    if "bias" in p:
        conv.bias.data = _t(p["bias"])


def _load_bn(bn, params, stats):
    if params is not None:
        bn.weight.data, bn.bias.data = _t(params["scale"]), _t(params["bias"])
    bn.running_mean.data, bn.running_var.data = _t(stats["mean"]), _t(stats["var"])


def _load_lenet(net, v):
    p, s = v["params"], v.get("batch_stats")
    for i, (conv, bn) in enumerate([(0, 1), (4, 5), (8, 9)]):
        _load_conv(net.features[conv], p[f"Conv_{i}"])
        if s:
            _load_bn(net.features[bn], p[f"BatchNorm_{i}"], s[f"BatchNorm_{i}"])
    for i, layer in enumerate([1, 3]):
        net.head[layer].weight.data = _t(np.asarray(p[f"Dense_{i}"]["kernel"]).T)
        net.head[layer].bias.data = _t(p[f"Dense_{i}"]["bias"])


def _load_generator(gen, v, s):
    p, stats = v["params"], v["batch_stats"]
    kernel = np.asarray(p["Dense_0"]["kernel"])  # (latent, s*s*2c) in NHWC order -> rows in NCHW order
    gen.linear.weight.data = _t(kernel.reshape(kernel.shape[0], s, s, -1).transpose(3, 1, 2, 0).reshape(-1, kernel.shape[0]))
    for i, bn in enumerate([gen.bn0, gen.bn1, gen.bn2, gen.bn3]):
        _load_bn(bn, p.get(f"BatchNorm_{i}") if i < 3 else None, stats[f"BatchNorm_{i}"])
    for i, conv in enumerate([gen.conv1, gen.conv2, gen.conv3]):
        _load_conv(conv, p[f"Conv_{i}"])


def test_torch_reference_computes_the_same_losses_and_updates():
    config = ddad_config.get_config("fashion_mnist,smoke")
    config.batch_size, config.student_steps_per_generator_step, config.latent_dim = 32, 1, 16
    config.lr_schedule, config.generator_lr_schedule = "constant", "constant"
    config.student_weight_decay = 0.05  # large enough that a missing or doubled decay shows in one update
    mesh, hp, t_model, t_vars, _, _, state = tiny_ddad(config)
    host = jax.device_get(state)
    ref = DDADIteration("lenet5_bn", "lenet5_half", 32, 1, 10, config.generator_channels, config.latent_dim,
                        config.batch_size, 1, 1.0, 1.0, config.student_lr, config.student_momentum,
                        config.student_weight_decay, config.generator_lr)
    _load_lenet(ref.teacher, jax.device_get(t_vars))
    _load_lenet(ref.student, state_lib.variables_of(host.student))
    _load_generator(ref.generator, state_lib.variables_of(host.generator), 8)
    z = np.random.default_rng(0).normal(size=(config.batch_size, config.latent_dim)).astype(np.float32)

    spec = ddad.state_spec(hp)
    run = lambda fn: jax.jit(parallel.data_parallel(
        lambda st, tv, z: fn(st, Teacher(t_model, tv), z), mesh,
        in_specs=(spec, parallel.REPLICATED, parallel.SHARDED), out_specs=(spec, parallel.REPLICATED)))
    gen_step = run(lambda st, teacher, z: ddad.generator_step(hp, teacher, st, z, None)[:2])
    state, g_metrics = gen_step(trainers.place_ddad_state(state, hp, mesh), t_vars, z)
    bn_loss, adv = ref.generator_losses(_t(z))
    np.testing.assert_allclose(g_metrics["gen/bn"], float(bn_loss.detach()), rtol=1e-4)
    np.testing.assert_allclose(-g_metrics["gen/adversarial"], float(adv.detach()), rtol=1e-4)
    torch_before = ref.generator.conv2.weight.detach().numpy().copy()
    ref.generator_step(_t(z))  # Adam: the same update
    delta = jax.device_get(state.generator.params)["Conv_1"]["kernel"] - host.generator.params["Conv_1"]["kernel"]
    np.testing.assert_allclose(np.transpose(delta, (3, 2, 0, 1)), ref.generator.conv2.weight.detach().numpy()
                               - torch_before, rtol=1e-3, atol=1e-7)

    torch_student_before = ref.student.features[4].weight.detach().numpy().copy()
    student_step = run(lambda st, teacher, z: ddad.student_step(hp, teacher, st, z))
    state, s_metrics = student_step(state, t_vars, z)
    np.testing.assert_allclose(s_metrics["student/loss"], ref.student_step(_t(z)), rtol=1e-4)
    # SGD with momentum and weight decay: the same update
    delta = jax.device_get(state.student.params)["Conv_1"]["kernel"] - host.student.params["Conv_1"]["kernel"]
    np.testing.assert_allclose(np.transpose(delta, (3, 2, 0, 1)), ref.student.features[4].weight.detach().numpy()
                               - torch_student_before, rtol=1e-3, atol=1e-7)
