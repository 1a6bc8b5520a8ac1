"""Where a DDAD iteration's time goes, op by op: ddad_jax (XLA) beside PyTorch eager.

    python benchmarks/profile_ops.py                       # fmnist and cifar, this machine
    python benchmarks/profile_ops.py --workloads fmnist --iters 5
    python benchmarks/profile_ops.py --smoke               # tiny networks, end to end in seconds: results
                                                           # into --results DIR (default a temp dir)

ddad_jax: the jitted iteration of ``benchmarks/speed.py`` runs under ``jax.profiler``; the
trace's XLA op events (one per executed HLO instruction: convolutions, fusions,
all-reduces, copies) are matched to the compiled HLO, whose metadata names the part of the
iteration (``generator_step`` / ``student_step`` and, inside, ``generator`` / ``teacher`` /
``student`` / ``optimizer``: named scopes in ``ddad_jax/methods/ddad.py``) and whether an op
is forward or backward (``transpose(jvp(...))``). PyTorch: ``torch.profiler`` over the same
iterations of ``benchmarks/torch_ddad.py``, by aten op.

Op time is summed over all XLA devices (threads) and divided by the device count, so it is
per-device busy time: it can add up to less than the wall time (idle threads, host work).
Writes ``benchmarks/results/profile_<cpu|gpu>.{json,md}``. Needs torch.
"""

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import parse_args, publish  # noqa: E402  pylint: disable=wrong-import-position
from benchmarks.speed import JaxWorkload, _config, _torch_workload  # noqa: E402  pylint: disable=wrong-import-position
from ddad_jax import parallel  # noqa: E402  pylint: disable=wrong-import-position

SMOKE = {"workloads": "fmnist", "iters": 1}  # --smoke: also speed.py's tiny networks and batch
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(?:\([^)]*\)|\S+)\s+([\w\-]+)\(")
_KIND = re.compile(r"kind=(k\w+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")


def hlo_index(hlo_text):
    """instruction name -> [opcode, fusion kind, op_name, opcodes inside the computations it
    calls]; op_name is inherited from the calling instruction when an instruction has no
    metadata of its own (e.g. inside a called computation)."""
    index, owner, calls, inner = {}, {}, {}, collections.defaultdict(set)
    computation, callees = None, {}
    for line in hlo_text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):  # a computation header
            m = _COMPUTATION.match(line)
            computation = m.group(1) if m else line.split()[0]
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, opcode = m.group(1), m.group(2)
        kind = (_KIND.search(line) or [None, ""])[1]
        op_name = (_OP_NAME.search(line) or [None, ""])[1]
        index[name] = [opcode, kind, op_name, set()]
        owner[name] = computation
        inner[computation].add(opcode)
        callees[name] = _CALLS.findall(line)
        for callee in callees[name]:
            calls[callee] = name
    sub_calls = collections.defaultdict(set)  # computation -> computations its instructions call
    for name, targets in callees.items():
        sub_calls[owner[name]].update(targets)
    within = {}  # computation -> every opcode it runs, through nested calls

    def ops_within(computation):
        if computation not in within:
            within[computation] = set(inner[computation])  # set first: call cycles end here
            for callee in sub_calls[computation]:
                within[computation] |= ops_within(callee)
        return within[computation]

    for name, entry in index.items():
        for callee in callees[name]:
            entry[3] |= ops_within(callee)
    named = {}  # computation -> an op_name found inside it (for fusions without metadata)
    for name, entry in index.items():
        if entry[2] and owner[name] not in named:
            named[owner[name]] = entry[2]
    for name, entry in index.items():
        if not entry[2]:
            entry[2] = next((named[c] for c in callees[name] if c in named), "")
    for _ in range(4):  # inherit op_names from callers, a few levels
        for name, entry in index.items():
            if not entry[2]:
                caller = calls.get(owner.get(name))
                if caller in index:
                    entry[2] = index[caller][2]
    return index


def part_of(op_name):
    step = next((s for s in ("generator_step", "student_step") if s in op_name), "other")
    net = next((n for n in ("optimizer", "teacher", "student", "generator")
                if re.search(rf"[/(]{n}[)/]", op_name + "/")), "")
    if step == "other" and not net:
        return "other (noise, replay, bookkeeping)"
    return f"{step}/{net}" if net else step


def kind_of(opcode, fusion_kind, name, op_name, inner=()):
    """A coarse kind for an executed op; ``inner``: opcodes inside the computations it calls
    (XLA:CPU fuses convolutions with their neighbours into YNNPACK ``ynn_fusion`` ops)."""
    backward = "transpose(" in op_name
    if opcode == "convolution" or name.startswith(("conv", "convolution")) or "convolution" in inner:
        return "convolution, backward" if backward else "convolution, forward"
    if opcode in ("all-reduce", "all-gather", "reduce-scatter", "collective-permute") or "all-reduce" in name:
        return "collective (pmean over devices)"
    if opcode in ("copy", "transpose") or "copy" in name or "transpose" in name:
        return "layout (copy / transpose)"
    if opcode == "dot" or "dot" in inner:
        return "matmul"
    if opcode == "fusion" and (fusion_kind == "kInput" or "reduce" in name or "reduce" in inner):
        return "reduction fusion (BN statistics, losses, grads of biases)"
    if opcode == "fusion":
        return "elementwise fusion"
    return "other"


def profile_jax(jx, iters):
    import jax  # pylint: disable=import-outside-toplevel
    hlo = jx.iteration.lower(jx.state, jx.tvars, jx.rng).compile().as_text()
    index = hlo_index(hlo)
    jx.step(), jx.step()  # warm
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(iters):
                jx.step()
        wall = (time.perf_counter() - t0) / iters
        path = glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)[0]
        trace = json.load(gzip.open(path))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in index:
            per_op[e["name"]] += e.get("dur", 0.0) / 1e3  # ms
    scale = 1.0 / (iters * jx.devices)
    by_kind, by_part, top = collections.Counter(), collections.Counter(), []
    for name, ms in per_op.items():
        opcode, fusion_kind, op_name, inner = index[name]
        kind = kind_of(opcode, fusion_kind, name, op_name, inner)
        ms *= scale
        by_kind[kind] += ms
        by_part[part_of(op_name)] += ms
        top.append({"op": name, "ms": ms, "kind": kind,
                    "part": part_of(op_name), "source": op_name.split("/", 1)[-1][-120:]})
    top.sort(key=lambda r: -r["ms"])
    return {"wall_ms": wall * 1e3, "op_ms": sum(by_kind.values()), "by_kind": dict(by_kind.most_common()),
            "by_part": dict(by_part.most_common()), "top_ops": top[:25], "devices": jx.devices}


_TORCH_KINDS = [
    ("convolution, backward", ("convolution_backward",)),
    ("convolution, forward", ("convolution", "conv2d", "mkldnn_convolution")),
    ("batch norm (forward + backward)", ("batch_norm",)),
    ("optimizer", ("_foreach", "adam", "sgd", "addcdiv", "addcmul", "lerp")),
    ("matmul", ("addmm", "mm", "linear", "matmul")),
    ("layout (copy / transpose)", ("copy_", "contiguous", "clone", "to_", "permute", "transpose")),
]


def profile_torch(tr, iters):
    import torch  # pylint: disable=import-outside-toplevel
    from torch.profiler import ProfilerActivity, profile  # pylint: disable=import-outside-toplevel
    tr.step(), tr.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(iters):
            tr.step()
    wall = (time.perf_counter() - t0) / iters
    by_kind, top = collections.Counter(), []
    for e in prof.key_averages():
        ms = e.self_cpu_time_total / 1e3 / iters
        if not e.key.startswith("aten::") or ms <= 0:
            continue
        op = e.key[len("aten::"):]
        kind = next((k for k, keys in _TORCH_KINDS if any(op.startswith(x) or x in op for x in keys)), "elementwise and other")
        by_kind[kind] += ms
        top.append({"op": e.key, "ms": ms, "kind": kind, "calls": e.count // iters})
    top.sort(key=lambda r: -r["ms"])
    return {"wall_ms": wall * 1e3, "op_ms": sum(by_kind.values()), "by_kind": dict(by_kind.most_common()),
            "top_ops": top[:15]}


def markdown(name, res):
    j, t = res["jax"], res["torch"]
    lines = [f"## {name}: batch {res['batch']}, k={res['student_steps']}", "",
             f"Wall time per iteration under the profilers: ddad_jax {j['wall_ms']:.0f} ms "
             f"({j['devices']} XLA devices; op busy time {j['op_ms']:.0f} ms a device), "
             f"PyTorch {t['wall_ms']:.0f} ms (aten self time {t['op_ms']:.0f} ms).", "",
             "| ddad_jax: part of the iteration | ms a device | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.1f} | {100 * v / j['op_ms']:.0f} % |" for k, v in j["by_part"].items()]
    lines += ["", "| kind of op | ddad_jax ms | PyTorch ms |", "|---|---:|---:|"]
    kinds = list(dict.fromkeys([*j["by_kind"], *t["by_kind"]]))
    lines += [f"| {k} | {j['by_kind'].get(k, 0):.1f} | {t['by_kind'].get(k, 0):.1f} |" for k in kinds]
    lines += ["", "Top XLA ops (ms a device per iteration):", "",
              "| op | ms | kind | part | source |", "|---|---:|---|---|---|"]
    lines += [f"| {r['op']} | {r['ms']:.1f} | {r['kind']} | {r['part']} | `{r['source'][-70:]}` |"
              for r in j["top_ops"][:12]]
    lines += ["", "Top PyTorch ops:", "", "| op | ms | calls |", "|---|---:|---:|"]
    lines += [f"| {r['op']} | {r['ms']:.1f} | {r['calls']} |" for r in t["top_ops"][:8]]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="fmnist,cifar", help="comma-separated: fmnist, cifar")
    parser.add_argument("--iters", type=int, default=3, help="profiled iterations (after 2 warm-up)")
    parser.add_argument("--cpu_devices", type=int, default=4)
    args = parse_args(parser, SMOKE, results_aliases=("--out",))
    names = [w for w in args.workloads.split(",") if w]
    if not names or set(names) - {"fmnist", "cifar"}:
        sys.exit(f"error: unknown workload(s) in '{args.workloads}'; known: fmnist, cifar")
    if args.iters < 1:
        sys.exit("error: --iters must be >= 1")
    try:
        import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        sys.exit("error: the profile compares against PyTorch; pip install torch")

    parallel.split_host_devices(ml_collections.ConfigDict({
        "cpu_devices": args.cpu_devices, "batch_size": math.gcd(*[_config(n, True, args.smoke).batch_size for n in names])}))
    import jax  # pylint: disable=import-outside-toplevel
    on_cpu = jax.default_backend() == "cpu"
    device = "cpu" if on_cpu else "gpu"
    results, sections = {}, []
    for name in names:
        config = _config(name, on_cpu, args.smoke)
        print(f"[profile] {name}: batch {config.batch_size}", flush=True)
        res = {"batch": config.batch_size, "student_steps": config.student_steps_per_generator_step,
               "jax": profile_jax(JaxWorkload(config), args.iters),
               "torch": profile_torch(_torch_workload(config, on_cpu, args.smoke), args.iters)}
        results[name] = res
        sections.append(markdown(name, res))
    results["command"] = f"python benchmarks/profile_ops.py {' '.join(sys.argv[1:])}".strip()
    print(publish(f"profile_{device}", f"Where a DDAD iteration's time goes ({device})",
                  "\n\n".join(sections) + f"\n\nRegenerate: `{results['command']}`", results,
                  directory=args.results))


if __name__ == "__main__":
    main()
