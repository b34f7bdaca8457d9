"""The registry of built-in strategies: one entry each, from which the schema, checks and plan derive.

And one default per parameter: the Python class built with no parameters is exactly the strategy
``strategy: {name: X}`` builds, for every registered strategy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from fedsilo.errors import ConfigError, ParameterError
from fedsilo.experiment.config import parse_config
from fedsilo.experiment.plan import make_strategy
from fedsilo.experiment.strategy_config import dp_refusal, secagg_refusal
from fedsilo.experiment.strategy_registry import BUILTINS, MEAN_BASED, STRATEGY_NAMES, own_keys
from fedsilo.strategy.base import Sampling
from fedsilo.strategy.central_dp import CentralDP
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.strategy.fedopt import FedOpt
from fedsilo.strategy.fedprox import FedProx
from fedsilo.strategy.robust import Robust

#: What a researcher gets from the Python API with no parameters, per registered name.
PYTHON_DEFAULTS = {
    "fedavg": FedAvg(),
    "fedprox": FedProx(),
    "fedavgm": FedOpt("fedavgm"),
    "fedadagrad": FedOpt("fedadagrad"),
    "fedadam": FedOpt("fedadam"),
    "fedyogi": FedOpt("fedyogi"),
    "median": Robust("median"),
    "trimmed_mean": Robust("trimmed_mean"),
    "krum": Robust("krum"),
    "multi_krum": Robust("multi_krum"),
}
THREE = [{"name": s, "data": s} for s in ("a", "b", "c")]


def config_with(strategy: Any, **extra: Any) -> Any:
    data = {"name": "exp", "task": "task.py", "rounds": 1, "silos": THREE, "strategy": strategy, **extra}
    return parse_config(data, Path("/base"), "exp.yaml")


def error_with(strategy: Any, **extra: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config_with(strategy, **extra)
    return info.value.one_line()


def test_every_registered_strategy_has_a_python_default() -> None:
    assert tuple(PYTHON_DEFAULTS) == STRATEGY_NAMES == tuple(BUILTINS)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_the_python_api_and_the_yaml_share_every_default(name: str) -> None:
    from_yaml = make_strategy(config_with({"name": name}))
    python = PYTHON_DEFAULTS[name]
    assert type(from_yaml) is type(python)
    fields = {f.name for f in dataclasses.fields(python)}
    assert {k: getattr(from_yaml, k) for k in fields} == {k: getattr(python, k) for k in fields}
    assert from_yaml == python


def test_fedopt_defaults_are_each_rules_own() -> None:
    """``FedOpt("fedavgm")`` once had eta 0.01 where the YAML had 1.0."""
    params = {n: (s.eta, s.beta1, s.beta2, s.tau) for n in ("fedavgm", "fedadagrad", "fedadam", "fedyogi")
              for s in [FedOpt(n)]}  # fmt: skip
    assert params == {
        "fedavgm": (1.0, 0.9, 0.99, 1e-3),  # beta1 is FedAvgM's momentum; beta2 and tau are unused
        "fedadagrad": (0.1, 0.9, 0.99, 1e-3),  # beta2 unused
        "fedadam": (0.01, 0.9, 0.99, 1e-3),
        "fedyogi": (0.01, 0.9, 0.99, 1e-3),
    }
    assert FedOpt("fedavgm", eta=0.3).eta == 0.3
    assert dataclasses.replace(FedOpt("fedavgm"), eta=0.5) == FedOpt("fedavgm", eta=0.5)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_each_model_rejects_a_key_it_does_not_take_and_lists_its_own(name: str) -> None:
    own = own_keys(name)
    assert own == list(config_with({"name": name}).strategy.params())
    takes = f"{name} takes {', '.join(own)}" if own else f"{name} has no parameters of its own"
    assert f"strategy.gamma: unknown key for {name} (misspelt?; {takes})" in error_with({"name": name, "gamma": 1})


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_secure_aggregation_and_central_dp_follow_the_registry(name: str) -> None:
    individual = BUILTINS[name].individual_updates
    assert individual == (name not in MEAN_BASED)
    secagg = {"privacy": {"secure_aggregation": True}}
    dp = {"privacy": {"dp": {"noise_multiplier": 1.0}}}
    if individual:
        assert f"privacy.secure_aggregation: {secagg_refusal(name)}" in error_with({"name": name}, **secagg)
        assert dp_refusal(name) in error_with({"name": name}, **dp)
    else:
        assert config_with({"name": name}, **secagg).privacy.secure_aggregation is not None
        assert isinstance(make_strategy(config_with({"name": name}, **dp)), CentralDP)


def test_the_refusals_list_the_mean_based_strategies() -> None:
    assert MEAN_BASED == ("fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi")
    assert secagg_refusal("median") == (
        "strategy median needs every silo's own update, which secure aggregation hides "
        "(use fedavg, fedprox, fedavgm, fedadagrad, fedadam or fedyogi)"
    )
    assert dp_refusal("krum") == (
        "privacy.dp releases a noised mean, but strategy krum looks at each update on its own "
        "(use fedavg, fedprox, fedavgm, fedadagrad, fedadam or fedyogi with privacy.dp)"
    )


def test_an_unknown_name_lists_the_registry_and_the_form_of_your_own() -> None:
    line = error_with({"name": "zzz"})
    assert f"unknown strategy 'zzz' (use one of: {', '.join(STRATEGY_NAMES)}; or a class of your own as " in line
    assert "FILE.py:ClassName)" in line
    line = error_with({"name": "my_strategy.py"})
    assert "strategy.name: unknown strategy 'my_strategy.py'; name its class too: 'my_strategy.py:ClassName'" in line
    line = error_with({"name": "my_strategy:Trimmed"})
    assert (
        "strategy.name: a strategy of your own is named FILE.py:ClassName (the file relative to the YAML), "
        "not 'my_strategy:Trimmed'" in line
    )


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FedProx(mu=0.0), "FedProx needs mu > 0, got 0.0"),
        (lambda: FedOpt("fedadam", eta=-1.0), "eta must be > 0, got -1.0"),
        (lambda: FedOpt("fedsgd"), "name must be one of fedavgm, fedadagrad, fedadam, fedyogi, not 'fedsgd'"),  # type: ignore[arg-type]
        (lambda: Robust("trimmed_mean", beta=0.5), r"beta must be in \[0, 0.5\), got 0.5"),
        (lambda: CentralDP(FedAvg(), 0.0, 1.0, expected_silos=2, sampling_rate=1.0), "noise_multiplier must be > 0"),
        (lambda: CentralDP(FedAvg(), 1.0, 1.0, expected_silos=0, sampling_rate=1.5), "expected_silos must be >= 1"),
        (
            lambda: CentralDP(FedAvg(), 2.0, 1.0, expected_silos=3, sampling_rate=1.0, adaptive=True, count_stddev=0.5),
            "adaptive clipping needs count_stddev > noise_multiplier / 2",
        ),
    ],
)
def test_strategy_constructors_raise_one_parameter_error_with_a_fix(make: Any, match: str) -> None:
    with pytest.raises(ParameterError, match=match) as info:
        make()
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)
    assert info.value.fix


def test_central_dp_names_every_bad_parameter_at_once() -> None:
    with pytest.raises(ParameterError) as info:
        CentralDP(FedAvg(), 1.0, -1.0, expected_silos=2, sampling_rate=0.0, delta=1.0, accountant="gdp")  # type: ignore[arg-type]
    assert info.value.message == (
        "invalid central DP settings: clip_norm must be > 0, got -1.0; sampling_rate must be in (0, 1], got 0.0; "
        "delta must be in (0, 1), got 1.0; accountant must be one of rdp, pld, got 'gdp'"
    )


def test_a_registered_model_builds_its_strategy_with_the_sampling() -> None:
    sampling = Sampling(fraction_fit=0.5, min_fit_clients=2)
    for name, model in BUILTINS.items():
        config = config_with({"name": name, "fraction_fit": 0.5, "min_fit_clients": 2}).strategy
        assert isinstance(config, model) and config.sampling() == sampling
        assert config.build(sampling).sampling == sampling and config.build(sampling).name == name
