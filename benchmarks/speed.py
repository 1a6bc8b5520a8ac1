"""Speed of one DDAD iteration: ddad_jax against a PyTorch eager implementation.

    python benchmarks/speed.py                      # both workloads on this machine
    python benchmarks/speed.py --workloads fmnist --repeats 9
    python benchmarks/speed.py --smoke              # tiny networks, end to end in seconds: results into
                                                    # --results DIR (default a temp dir), never the README

Workloads: ``fmnist`` (LeNet-5 (BN) -> LeNet-5-half, the Fashion-MNIST config) and
``cifar`` (ResNet-34 -> ResNet-18, the DFAD generator at 32x32x3; batch 64 on a CPU,
the protocol's 256 on an accelerator). For each, the full iteration (one generator update
+ k student updates) and its parts (generator step, student step, teacher inference)
are timed, JAX and PyTorch alternately in the same process, after warm-up; each figure
is the median over ``--repeats`` timings. JAX compile time is reported separately.
ddad_jax runs as a user gets it: on a CPU host split into ``gcd(cpu_devices, batch)``
XLA devices (``parallel.split_host_devices``, as ``experiments/launch.py`` does), with
the CPU paths of ``ddad_jax/backends/cpu.py``. Weights are random: speed does not depend on them.

Writes ``benchmarks/results/speed_<cpu|gpu>.{json,md}`` and the README table between the
``speed_<device>`` markers. Needs torch (``pip install torch``; benchmark-only).
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import RESULTS, parse_args, publish  # noqa: E402  pylint: disable=wrong-import-position
from ddad_jax import parallel  # noqa: E402  pylint: disable=wrong-import-position

SMOKE = {"workloads": "fmnist", "repeats": 1, "iters": 1}  # --smoke: also tiny networks and batch (_config)
WORKLOADS = {
    # name: (configs/ddad.py argument, batch on a CPU or None for the config's)
    "fmnist": ("fashion_mnist", None),
    "cifar": ("cifar10", 64),
}


def _config(name, on_cpu, smoke=False):
    """The workload's DDAD config; ``smoke``: tiny networks and batch (``--smoke``; LeNet-5s
    for both workloads, so ``cifar`` keeps only its 32x32x3 images)."""
    from configs import ddad as ddad_config  # pylint: disable=import-outside-toplevel
    dataset, cpu_batch = WORKLOADS[name]
    config = ddad_config.get_config(dataset)
    # the plain DDAD iteration, as in the PyTorch reference: BN + adversarial terms, L1 student
    assert dict(config.generator_terms) == {"bn": 1.0, "adversarial": 1.0} and config.student_objective == "l1"
    if on_cpu and cpu_batch:
        config.batch_size = cpu_batch
    if smoke:
        config.batch_size, config.generator_channels, config.latent_dim = 8, 4, 8
        config.teacher, config.student = "lenet5_bn", "lenet5_half"
        config.student_steps_per_generator_step = 2
    return config


def _timed(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


class JaxWorkload:
    def __init__(self, config):
        import jax  # pylint: disable=import-outside-toplevel
        import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
        from ddad_jax import trainers, data, models, parallel, state as state_lib  # pylint: disable=import-outside-toplevel
        from ddad_jax.methods import ddad  # pylint: disable=import-outside-toplevel

        self.jax = jax
        spec = data.get_spec(config.dataset)
        self.mesh = mesh = parallel.make_mesh()
        axis = parallel.BATCH_AXIS
        dtype = trainers.compute_dtype(config)
        teacher = models.get_classifier(config.teacher, spec.num_classes, bn_axis_name=axis, dtype=dtype)
        image = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))
        tvars = state_lib.init_variables(teacher.clone(bn_axis_name=None), jax.random.PRNGKey(0), image)
        self.tvars = parallel.replicate(tvars, mesh)
        generator = models.get_generator(config.generator_channels, spec.image_size, spec.channels,
                                         bn_axis_name=axis, dtype=dtype)
        student = models.get_classifier(config.student, spec.num_classes, bn_axis_name=axis, dtype=dtype)
        hp = trainers.hyper(config, spec)
        self.state = parallel.replicate(trainers.create_ddad_state(config, hp, spec, generator, student,
                                                                jax.random.PRNGKey(1)), mesh)
        self.iteration = ddad.make_iteration(teacher, hp, mesh)
        self.rng = jax.random.PRNGKey(2)

        t_apply = lambda tv: ddad.Teacher(teacher, tv)
        R, S = parallel.REPLICATED, parallel.SHARDED
        self.gen_step = jax.jit(parallel.data_parallel(
            lambda st, tv, z: ddad.generator_step(hp, t_apply(tv), st, z, None)[:2], mesh, (R, R, S), (R, R)),
            donate_argnums=0)
        self.student_step_fn = jax.jit(parallel.data_parallel(
            lambda st, tv, z: ddad.student_step(hp, t_apply(tv), st, z), mesh, (R, R, S), (R, R)),
            donate_argnums=0)
        # the teacher's (logits, BN statistics): what the PyTorch reference's teacher_inference
        # computes; its sown features are unused here (and dropped by XLA)
        self.teacher_fn = jax.jit(parallel.data_parallel(lambda tv, x: t_apply(tv)(x)[:2], mesh, (R, S), (S, R)))
        self.z = parallel.shard_batch(jax.random.normal(self.rng, (hp.batch_size, hp.latent_dim)), mesh)
        g = self.state.generator
        x = generator.clone(bn_axis_name=None).apply(
            {"params": g.params, "batch_stats": g.batch_stats}, self.z, train=True, mutable=["batch_stats"])[0]
        self.fixed = parallel.shard_batch(x, mesh)
        self.devices = mesh.size

    def _block(self, x):
        self.jax.block_until_ready(x)

    def step(self):
        self.state, metrics = self.iteration(self.state, self.tvars, self.rng)
        self._block(metrics)

    def generator_step(self):
        self.state, metrics = self.gen_step(self.state, self.tvars, self.z)
        self._block(metrics)

    def student_step(self):
        self.state, metrics = self.student_step_fn(self.state, self.tvars, self.z)
        self._block(metrics)

    def teacher_inference(self):
        self._block(self.teacher_fn(self.tvars, self.fixed))


def _torch_workload(config, on_cpu, smoke=False):
    import torch  # pylint: disable=import-outside-toplevel
    from benchmarks.torch_ddad import DDADIteration  # pylint: disable=import-outside-toplevel
    from ddad_jax import data  # pylint: disable=import-outside-toplevel

    if on_cpu:
        device = "cpu"
        torch.set_flush_denormal(True)  # without it some CPU steps stall on denormals
        if smoke:  # on a busy machine torch's thread pool stalls (100x); smoke timings mean nothing
            torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device = "cuda"
        torch.backends.cudnn.benchmark = True
    else:
        raise SystemExit("error: JAX runs on an accelerator but this torch has no CUDA; install a CUDA build")
    spec = data.get_spec(config.dataset)
    return DDADIteration(config.teacher, config.student, spec.image_size, spec.channels, spec.num_classes,
                         config.generator_channels, config.latent_dim, config.batch_size,
                         config.student_steps_per_generator_step, config.generator_terms.bn, config.generator_terms.adversarial,
                         config.student_lr, config.student_momentum, config.student_weight_decay,
                         config.generator_lr, device=device)


def measure(name, on_cpu, repeats, iters, log, compute_dtype="float32", smoke=False):
    config = _config(name, on_cpu, smoke)
    config.compute_dtype = compute_dtype
    jx = JaxWorkload(config)
    tr = _torch_workload(config, on_cpu, smoke)
    rows = []
    parts = [("ddad_iteration", "step"), ("generator_step", "generator_step"),
             ("student_step", "student_step"), ("teacher_inference", "teacher_inference")]
    for part, method in parts:
        j, t = getattr(jx, method), getattr(tr, method)
        t0 = time.perf_counter()
        j()  # compiles
        first = time.perf_counter() - t0
        j(), t(), t()  # warm-up
        n = iters if part == "ddad_iteration" else 3 * iters
        jt, tt = [], []
        for r in range(repeats):  # alternate, so machine noise hits both alike
            jt.append(_timed(j, n))
            tt.append(_timed(t, n))
            log(f"  {name}/{part} repeat {r + 1}/{repeats}: jax {jt[-1] * 1e3:.1f} ms, torch {tt[-1] * 1e3:.1f} ms")
        jm, tm = statistics.median(jt), statistics.median(tt)
        rows.append({"workload": f"{name}/{part}", "batch": config.batch_size,
                     "student_steps": config.student_steps_per_generator_step,
                     "jax_iter_per_s": 1 / jm, "torch_iter_per_s": 1 / tm, "ratio": tm / jm,
                     "jax_compile_s": max(first - jm, 0.0), "repeats": repeats, "timed_calls": n,
                     "jax_ms": [x * 1e3 for x in jt], "torch_ms": [x * 1e3 for x in tt]})
    return rows, jx.devices


def markdown(result):
    lines = [f"Device: {result['device_desc']}; JAX ({result.get('compute_dtype', 'float32')}) on "
             f"{result['jax_devices']} {result['backend']} device(s), "
             f"PyTorch {result['torch_version']} eager on {result['torch_threads']} threads. Medians of "
             f"{result['rows'][0]['repeats']} alternating timings after warm-up.", "",
             "| workload | batch | k | JAX it/s | PyTorch it/s | ratio | JAX compile (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['workload']} | {r['batch']} | {r['student_steps']} | {r['jax_iter_per_s']:.3g} | "
                     f"{r['torch_iter_per_s']:.3g} | **{r['ratio']:.2f}** | {r['jax_compile_s']:.1f} |")
    lines += ["", f"Regenerate: `{result['command']}`"]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="fmnist,cifar", help="comma-separated: fmnist, cifar")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=2, help="iterations per timing (parts: 3x)")
    parser.add_argument("--cpu_devices", type=int, default=4, help="as configs' cpu_devices")
    parser.add_argument("--compute_dtype", default="float32", choices=("float32", "bfloat16"),
                        help="ddad_jax's compute dtype (PyTorch stays float32)")
    parser.add_argument("--render", choices=("cpu", "gpu"), help="only rewrite the Markdown and README "
                        "table from an existing results/speed_<device>.json (no timing)")
    args = parse_args(parser, SMOKE)
    if args.render:
        rows = json.load(open(os.path.join(args.results, f"speed_{args.render}.json")))
        meta = json.load(open(os.path.join(args.results, f"speed_{args.render}_meta.json")))
        write_tables(args.render, {**meta, "rows": rows}, directory=args.results)  # the JSON stays as it is
        return
    names = [w for w in args.workloads.split(",") if w]
    unknown = set(names) - set(WORKLOADS)
    if unknown or not names:
        sys.exit(f"error: unknown workload(s) {sorted(unknown)}; known: {', '.join(WORKLOADS)}")
    if args.repeats < 1 or args.iters < 1:
        sys.exit("error: --repeats and --iters must be >= 1")
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        sys.exit("error: the speed benchmark compares against PyTorch; pip install torch")

    # Split a CPU host before JAX starts, as the entry points do, for a batch every workload divides.
    parallel.split_host_devices(ml_collections.ConfigDict({
        "cpu_devices": args.cpu_devices, "batch_size": math.gcd(*[_config(w, True, args.smoke).batch_size for w in names])}))
    import jax  # pylint: disable=import-outside-toplevel
    backend = jax.default_backend()
    on_cpu = backend == "cpu"
    log = lambda m: print(m, flush=True)
    rows = []
    for name in names:
        log(f"[speed] {name}")
        r, devices = measure(name, on_cpu, args.repeats, args.iters, log, args.compute_dtype, args.smoke)
        rows += r
    device = "cpu" if on_cpu else "gpu"
    argv = " ".join(sys.argv[1:])
    result = {"backend": backend, "jax_devices": devices, "device_desc": jax.devices()[0].device_kind
              if not on_cpu else f"{platform.machine()}, {os.cpu_count()} CPU cores",
              "compute_dtype": args.compute_dtype, "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
              "command": f"python benchmarks/speed.py {argv}".strip(), "rows": rows}
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, f"speed_{device}_meta.json"), "w") as f:
        json.dump({k: v for k, v in result.items() if k != "rows"}, f, indent=2)
    log(write_tables(device, result, rows, args.results))


def write_tables(device, result, rows=None, directory=RESULTS):
    """Markdown (and README table, for benchmarks/results) from ``result`` into ``directory``;
    ``rows`` (if given) become speed_<device>.json."""
    return publish(f"speed_{device}", f"DDAD iteration speed, ddad_jax vs PyTorch eager ({device})",
                   markdown(result), rows, f"speed_{device}", directory=directory)


if __name__ == "__main__":
    main()
