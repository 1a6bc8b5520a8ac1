"""How a method's base config picks a protocol file from its ``DATASET[,smoke]`` argument."""

import importlib
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
    """The protocol file ``protocols[DATASET]``'s config for ``arg`` = ``DATASET[,smoke]``."""
    dataset, _, rest = (arg or default).partition(",")
    if dataset not in protocols:
        raise ValueError(f"configs/{method}.py: unknown dataset '{dataset}' (use {', '.join(protocols)})")
    c = importlib.import_module(f"configs.{protocols[dataset]}").get_config()
    return smoke(c) if "smoke" in parse_options(rest) else c
