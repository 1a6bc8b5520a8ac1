"""Config fields, each declared once with its range and default.

A method's hyperparameters are a frozen dataclass (``methods.ddad.DDADHyper``, ...) whose
fields are declared with ``field``: the default, the range a config value must lie in, and
the config name when it differs from the attribute's. From that one declaration:

* ``trainers.validate`` checks a config's value of the field before anything is written;
* ``from_config`` reads the dataclass from a config (a field the config lacks keeps its
  default), so a trainer passes only what it derives (the dataset's classes, parsed terms).

Fields that no method dataclass holds (epochs, learning rates, reporting) are declared with a
``Rule`` in ``trainers.common.RUN_FIELDS``. A generator term's parameters use the same
``Rule`` (``objectives.generator``).
"""

import dataclasses
import math
from typing import Any, Dict, Iterable, Optional, Tuple

from ddad_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a value must be: a ``kind`` (int or float) within ``[low, high]`` (``low``
    excluded when ``open_low``), or one of ``choices`` (booleans: ``(True, False)``)."""
    kind: type = float
    low: Optional[float] = None
    high: Optional[float] = None
    open_low: bool = False  # > low, not >= low
    choices: Optional[Tuple[Any, ...]] = None

    def check(self, name: str, value: Any) -> None:
        """Raises ``UserError`` naming ``name`` when ``value`` breaks the rule."""
        if self.choices is not None:
            if value not in self.choices:
                raise UserError(f"{name} must be one of {', '.join(repr(c) for c in self.choices)}, got {value!r}")
            return
        number = isinstance(value, int) if self.kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not number or (self.kind is float and not math.isfinite(value)):
            raise UserError(f"{name} must be a{'n integer' if self.kind is int else ' finite number'}, got {value!r}")
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        if not low_ok or (self.high is not None and value > self.high):
            raise UserError(f"{name} must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        """'>= 0', '> 0 and <= 1', ... ('any' when unbounded)."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low}")
        if self.high is not None:
            parts.append(f"<= {self.high}")
        return " and ".join(parts) or "any"


def field(default: Any, rule: Optional[Rule] = None, config: Optional[str] = None, **rule_args):
    """A dataclass field with its range (``rule``, or ``Rule(**rule_args)``) and, when the
    config calls it otherwise, its config name. ``rule=None`` and no ``rule_args``: not read
    from a config (the trainer derives it)."""
    if rule is None and rule_args:
        rule = Rule(**rule_args)
    return dataclasses.field(default=default, metadata={"rule": rule, "config": config})


def declared(cls) -> Dict[str, Tuple[str, Rule]]:
    """``{config name: (attribute, rule)}`` of the fields ``cls`` reads from a config."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("rule") is not None:
            out[f.metadata.get("config") or f.name] = (f.name, f.metadata["rule"])
    return out


def rules(classes: Iterable[type], extra: Optional[Dict[str, Rule]] = None) -> Dict[str, Rule]:
    """Every config name's rule over ``classes`` and ``extra``; a name declared twice must
    carry the same rule (``ValueError`` otherwise: a programming error, not a user's)."""
    out: Dict[str, Rule] = dict(extra or {})
    for cls in classes:
        for name, (_, rule) in declared(cls).items():
            if name in out and out[name] != rule:
                raise ValueError(f"config field '{name}' is declared with two rules: {out[name]} and {rule} ({cls.__name__})")
            out[name] = rule
    return out


def from_config(cls, config, **derived):
    """``cls`` with each declared field read from ``config`` (the default where the config
    lacks it) and ``derived`` values (fields the trainer computes) as given."""
    values = {}
    for name, (attr, rule) in declared(cls).items():
        if name in config:
            value = config[name]
            values[attr] = float(value) if rule.kind is float and rule.choices is None else value
    return cls(**{**values, **derived})
