"""What depends on the backend JAX computes on: ``on_cpu`` and how far to unroll a loop.

The CPU-only speed code lives in ``cpu.py``.
"""

import jax


def on_cpu() -> bool:
    """Whether JAX computes on the CPU backend (where some XLA paths need working around)."""
    return jax.default_backend() == "cpu"


def scan_unroll(steps: int) -> int:
    """The ``unroll`` of a ``lax.scan`` over ``steps`` steps: all of them on CPU, where XLA's
    CPU runtime ran large convolutions inside a while loop ~7x slower (CIFAR ResNet-34 ->
    ResNet-18 at batch 64: 247 s vs 35 s); 1 (a loop, compiled once) elsewhere."""
    return steps if on_cpu() else 1
