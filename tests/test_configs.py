"""One config grammar: ``DATASET[,PAIR][,smoke]`` for a method, ``[smoke]`` for a protocol
file; one smoke size; fields every run shares set in one place; "every batch" pools resolved
where the run is built."""

import glob
import importlib
import os

import pytest

from configs import common
from ddad_jax import data, trainers
from ddad_jax.trainers.inversion import inversion_hyper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["teacher", "ddad", "ddad_plus", "kd", "hidfd", "dafl", "dfad", "dfq", "deepinversion", "cmi", "fast"]
PROTOCOL_FILES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                        if os.path.basename(p)[:-3] not in {*METHODS, "common", "datafree", "__init__"})


@pytest.mark.parametrize("arg, expected", [
    ("", common.Arg("cifar10", None, False)),
    ("fashion_mnist", common.Arg("fashion_mnist", None, False)),
    ("fashion_mnist,smoke", common.Arg("fashion_mnist", None, True)),
    ("smoke", common.Arg("cifar10", None, True)),  # the default dataset, shrunk
    ("my_data,smoke", common.Arg("my_data", None, True)),
])
def test_parse_arg_of_a_method(arg, expected):
    assert common.parse_arg(arg, "configs/x.py", "cifar10") == expected


def test_parse_arg_with_pairs():
    pairs = common.PAIRS
    assert common.parse_arg("cifar100,wrn40_2-wrn16_2,smoke", "c", "cifar10", pairs) == \
        common.Arg("cifar100", "wrn40_2-wrn16_2", True)
    assert common.parse_arg("cifar10", "c", "cifar10", pairs).pair == pairs[0]  # the default pair
    assert common.parse_arg("smoke", "configs/p.py") == common.Arg(None, None, True)  # a protocol file


@pytest.mark.parametrize("arg, kwargs, match", [
    ("cifar10,fast", {"default_dataset": "cifar10"}, r"configs/x.py: unknown option\(s\) \['fast'\] \(known: smoke\)"),
    ("cifar10,smoke,tiny", {"default_dataset": "cifar10", "pairs": common.PAIRS}, r"\['tiny'\] \(known: smoke and one of resnet34"),
    ("cifar10,resnet34-resnet18,wrn40_2-wrn16_1", {"default_dataset": "cifar10", "pairs": common.PAIRS}, "unknown option"),
    ("CIFAR-10", {"default_dataset": "cifar10"}, "'CIFAR-10' is not a dataset name"),
    ("cifar10", {}, r"configs/x.py: unknown option\(s\) \['cifar10'\] \(known: smoke\)"),  # a protocol file takes no dataset
])
def test_parse_arg_refuses_what_it_does_not_know(arg, kwargs, match):
    with pytest.raises(ValueError, match=match):
        common.parse_arg(arg, "configs/x.py", **kwargs)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_shrinks_by_the_one_smoke(method):
    module = importlib.import_module(f"configs.{method}")
    full, small = module.get_config("fashion_mnist"), module.get_config("fashion_mnist,smoke")
    assert small.batch_size == 16 and small.eval_examples == 64 and small.eval_batch_size == 32
    for name, value in common.SMOKE.items():  # every smoke field the config has, at the smoke value
        if name in full and name not in common.SMOKE_BY_KIND.get(full.kind, {}):
            assert small[name] == value, (method, name)
    trainers.validate(small)
    trainers.validate(full)


@pytest.mark.parametrize("name", PROTOCOL_FILES)
def test_every_protocol_file_takes_smoke(name):
    module = importlib.import_module(f"configs.{name}")
    full, small = module.get_config(""), module.get_config("smoke")
    assert full.batch_size > 16 and small.batch_size == 16, name
    assert small.dataset == full.dataset and small.kind == full.kind
    with pytest.raises(ValueError, match="unknown option"):
        module.get_config("smok")


def test_every_run_shares_its_common_fields_from_one_place():
    for method in METHODS:
        c = importlib.import_module(f"configs.{method}").get_config("cifar10")
        for name in ("kind", "dataset", "data_dir", "seed", "num_devices", "cpu_devices", "log_every",
                     "checkpoint_every", "eval_batch_size", "eval_examples"):
            assert name in c, (method, name)
        assert c.cpu_devices == 4 and c.eval_examples == -1 and c.dataset == "cifar10"


def test_an_every_batch_pool_follows_an_epochs_override():
    from configs import ddad_plus, fast
    spec = data.get_spec("fashion_mnist")
    c = ddad_plus.get_config("fashion_mnist")
    assert c.pool_size == -1 and trainers.hyper(c, spec).pool_size == c.num_epochs * c.iters_per_epoch == 1500
    c.num_epochs = 10  # was frozen at 60 * 25 when the config was written
    assert trainers.hyper(c, spec).pool_size == 250
    c.pool_size = 7
    assert trainers.hyper(c, spec).pool_size == 7
    f = fast.get_config("fashion_mnist")
    f.num_epochs = 3
    assert inversion_hyper(f, spec).pool_size == 3


def test_configs_carry_no_benchmark_budget():
    """The data-free benchmark's equal budget is the benchmark's (--config.time_budget_s)."""
    for method in ["dafl", "dfad", "dfq", "deepinversion", "cmi", "fast", "ddad", "ddad_plus"]:
        assert importlib.import_module(f"configs.{method}").get_config("fashion_mnist").time_budget_s == 0.0, method
