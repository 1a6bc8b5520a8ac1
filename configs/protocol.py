"""How a method's base config picks a protocol file from its ``DATASET[,smoke]`` argument."""

import importlib
import re
from typing import Callable, Dict

import ml_collections


def parse_options(arg: str, known=("smoke",)):
    """``'a,b'`` -> {'a', 'b'}, refusing unknown options."""
    options = {p for p in (arg or "").split(",") if p}
    unknown = options - set(known)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} (known: {', '.join(known)})")
    return options


def from_argument(method: str, protocols: Dict[str, str], arg: str, default: str,
                  smoke: Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]) -> ml_collections.ConfigDict:
    """The protocol file ``protocols[DATASET]``'s config for ``arg`` = ``DATASET[,smoke]``; a
    dataset of the user's own (docs/data.md) gets ``default``'s protocol."""
    dataset, _, rest = (arg or default).partition(",")
    c = importlib.import_module(f"configs.{protocols.get(custom_dataset(dataset, method), protocols[default])}").get_config()
    c.dataset = dataset
    return smoke(c) if "smoke" in parse_options(rest) else c


def custom_dataset(dataset: str, method: str) -> str:
    """``dataset``, refused when it cannot be a dataset name (the run checks it is prepared)."""
    if not re.match(r"[a-z][a-z0-9_]*$", dataset):
        raise ValueError(f"configs/{method}.py: '{dataset}' is not a dataset name (fashion_mnist, cifar10, cifar100 "
                         "or one of your own, prepared with python -m ddad_jax.data.prepare)")
    return dataset
