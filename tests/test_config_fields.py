"""Config fields declared once: the rule checks a value, the dataclass reads a config."""

import dataclasses

import ml_collections
import pytest

from ddad_jax import config_fields, objectives, trainers
from ddad_jax.config_fields import Rule, field
from ddad_jax.errors import UserError
from ddad_jax.methods import ddad


@pytest.mark.parametrize("rule, value, match", [
    (Rule(int, 1), 0, "x must be >= 1, got 0"),
    (Rule(int, 1), 2.5, "x must be an integer, got 2.5"),
    (Rule(int, 1), True, "x must be an integer, got True"),
    (Rule(float, 0.0, open_low=True), 0.0, "x must be > 0.0, got 0.0"),
    (Rule(float, 0.0, 1.0), 1.5, r"x must be >= 0.0 and <= 1.0, got 1.5"),
    (Rule(float, 0.0), float("inf"), "x must be a finite number, got inf"),
    (Rule(choices=("sgd", "adam")), "lbfgs", "x must be one of 'sgd', 'adam', got 'lbfgs'"),
])
def test_rule_refuses_with_the_bound_it_broke(rule, value, match):
    with pytest.raises(UserError, match=match):
        rule.check("x", value)


@pytest.mark.parametrize("rule, value", [(Rule(int, 1), 1), (Rule(float, 0.0, 1.0), 1), (Rule(float, 0.0, open_low=True), 1e-9),
                                         (Rule(choices=(True, False)), False)])
def test_rule_accepts_values_in_range(rule, value):
    rule.check("x", value)


@dataclasses.dataclass(frozen=True)
class Toy:
    steps: int = field(5, kind=int, low=1, config="toy_steps_per_round")
    rate: float = field(0.5, low=0.0)
    derived: int = 7  # no rule: never read from a config


def test_from_config_reads_declared_fields_under_their_config_names():
    c = ml_collections.ConfigDict({"toy_steps_per_round": 9, "derived": 100, "rate": 2})
    toy = config_fields.from_config(Toy, c)
    assert toy == Toy(steps=9, rate=2.0, derived=7) and isinstance(toy.rate, float)
    assert config_fields.from_config(Toy, ml_collections.ConfigDict({}), derived=3) == Toy(derived=3)  # defaults
    assert set(config_fields.declared(Toy)) == {"toy_steps_per_round", "rate"}


def test_a_name_declared_twice_with_two_rules_is_a_programming_error():
    @dataclasses.dataclass(frozen=True)
    class Other:
        rate: float = field(0.5, low=1.0)
    with pytest.raises(ValueError, match="'rate' is declared with two rules"):
        config_fields.rules((Toy, Other))


def test_ddad_hyperparameters_come_from_their_declarations():
    from configs import ddad as ddad_config
    from ddad_jax import data
    config = ddad_config.get_config("fashion_mnist")
    hp = trainers.hyper(config, data.get_spec("fashion_mnist"))
    assert hp.student_steps == config.student_steps_per_generator_step and hp.batch_size == config.batch_size
    assert hp.generator_terms == (objectives.Term("adversarial", 1.0), objectives.Term("bn", 1.0))
    # the declared range is what validation checks
    assert trainers.FIELD_RULES["student_steps_per_generator_step"] == config_fields.declared(ddad.DDADHyper)[
        "student_steps_per_generator_step"][1]
    with config.unlocked():
        config.bn_momentum = 1.0
    with pytest.raises(UserError, match="bn_momentum must be >= 0.0 and <= 0.999, got 1.0"):
        trainers.validate(config)
