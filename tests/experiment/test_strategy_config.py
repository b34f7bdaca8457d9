"""The `strategy:` section: every strategy selectable by name, its parameters validated and shown.

Errors must name the field (``strategy.mu``, ``strategy.name``) and list what exists; checks that
depend on the number of silos come from the plan; every strategy runs end to end from YAML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.errors import ConfigError
from fedsilo.experiment.config import ExperimentConfig, load_config, parse_config
from fedsilo.experiment.plan import build_plan, make_strategy
from fedsilo.experiment.strategy_config import STRATEGY_NAMES, strategy_params
from fedsilo.runtime.launch import run_experiment
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.strategy.fedopt import FedOpt
from fedsilo.strategy.fedprox import FedProx
from fedsilo.strategy.robust import Robust

FIVE = {"a": 12, "b": 24, "c": 36, "d": 16, "e": 20}


def config_with(strategy: Any) -> Any:
    data = {"name": "exp", "task": "task.py", "rounds": 1, "silos": [{"name": "a", "data": "d"}], "strategy": strategy}
    return parse_config(data, Path("/base"), "exp.yaml")


def error_with(strategy: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config_with(strategy)
    line = info.value.one_line()
    assert "\n" not in line and info.value.exit_code == 2
    return line


def test_all_strategies_exist() -> None:
    assert STRATEGY_NAMES == (
        "fedavg",
        "fedprox",
        "fedavgm",
        "fedadagrad",
        "fedadam",
        "fedyogi",
        "median",
        "trimmed_mean",
        "krum",
        "multi_krum",
    )


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fedavg", {}),
        ("fedprox", {"mu": 0.01}),
        ("fedavgm", {"eta": 1.0, "momentum": 0.9, "mean_only": ["*running_mean", "*running_var"]}),
        ("fedadagrad", {"eta": 0.1, "beta1": 0.9, "tau": 1e-3, "mean_only": ["*running_mean", "*running_var"]}),
        (
            "fedadam",
            {"eta": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3, "mean_only": ["*running_mean", "*running_var"]},
        ),
        (
            "fedyogi",
            {"eta": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3, "mean_only": ["*running_mean", "*running_var"]},
        ),
        ("median", {}),
        ("trimmed_mean", {"beta": 0.1}),
        ("krum", {"byzantine": 1}),
        ("multi_krum", {"byzantine": 1, "num_selected": None}),
    ],
)
def test_defaults_of_each_strategy(name: str, params: dict[str, Any]) -> None:
    config = config_with({"name": name})
    assert config.strategy.name == name
    assert strategy_params(config.strategy) == params
    assert (config.strategy.fraction_fit, config.strategy.min_fit_clients) == (1.0, 1)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_the_saved_config_reads_back_the_same(name: str) -> None:
    """`--resume` rebuilds the config from the run folder's config.json."""
    config = config_with({"name": name, "fraction_fit": 0.5})
    assert ExperimentConfig.model_validate(json.loads(json.dumps(config.model_dump(mode="json")))) == config


def test_name_may_be_left_out_for_fedavg() -> None:
    config = config_with({"fraction_fit": 0.5})
    assert config.strategy.name == "fedavg" and config.strategy.fraction_fit == 0.5


def test_a_misspelt_name_lists_the_names_and_suggests_one() -> None:
    line = error_with({"name": "fedadm"})
    assert line.startswith("exp.yaml: strategy.name: unknown strategy 'fedadm'; did you mean 'fedadam'?")
    assert "use one of: fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi, median, trimmed_mean" in line
    assert "did you mean" not in error_with({"name": "zzz"})
    assert "strategy.name: unknown strategy '3'" in error_with({"name": 3})


def test_a_bare_name_instead_of_a_mapping_shows_the_form() -> None:
    assert "exp.yaml: strategy: expected a mapping with a name, e.g. `strategy: {name: krum}`" in error_with("krum")
    assert "strategy: expected a mapping with a name" in error_with(None)


def test_a_bad_parameter_names_its_field() -> None:
    assert "exp.yaml: strategy.mu: Input should be greater than 0" in error_with({"name": "fedprox", "mu": -1})
    assert "strategy.beta2: Input should be less than 1" in error_with({"name": "fedadam", "beta2": 1.0})
    assert "strategy.beta: Input should be less than 0.5" in error_with({"name": "trimmed_mean", "beta": 0.5})
    assert "strategy.byzantine: Input should be a valid integer" in error_with({"name": "krum", "byzantine": "two"})


def test_a_parameter_of_another_strategy_is_an_unknown_key_saying_what_is_taken() -> None:
    line = error_with({"name": "fedavg", "mu": 0.1})
    assert "strategy.mu: unknown key for fedavg (misspelt?; fedavg has no parameters of its own)" in line
    line = error_with({"name": "fedadagrad", "beta2": 0.9})  # Adagrad has no second decay
    assert "strategy.beta2: unknown key for fedadagrad (misspelt?; fedadagrad takes eta, beta1, tau, mean_only)" in line


def test_every_problem_in_the_section_at_once() -> None:
    line = error_with({"name": "multi_krum", "byzantine": -1, "num_selected": 0, "fraction_fit": 2})
    for field in ("strategy.byzantine:", "strategy.num_selected:", "strategy.fraction_fit:"):
        assert field in line


@pytest.mark.parametrize(
    ("strategy", "kind", "attrs"),
    [
        ({"name": "fedavg"}, FedAvg, {}),
        ({"name": "fedprox", "mu": 0.3}, FedProx, {"mu": 0.3}),
        ({"name": "fedavgm", "eta": 0.7, "momentum": 0.5}, FedOpt, {"eta": 0.7, "beta1": 0.5}),
        ({"name": "fedadagrad", "eta": 0.2, "tau": 0.01}, FedOpt, {"eta": 0.2, "beta1": 0.9, "tau": 0.01}),
        ({"name": "fedadam", "beta2": 0.9, "mean_only": []}, FedOpt, {"eta": 0.01, "beta2": 0.9, "mean_only": ()}),
        ({"name": "fedyogi", "beta1": 0.0}, FedOpt, {"beta1": 0.0, "beta2": 0.99, "tau": 1e-3}),
        ({"name": "median"}, Robust, {}),
        ({"name": "trimmed_mean", "beta": 0.3}, Robust, {"beta": 0.3}),
        ({"name": "krum", "byzantine": 0}, Robust, {"byzantine": 0}),
        ({"name": "multi_krum", "num_selected": 2}, Robust, {"byzantine": 1, "num_selected": 2}),
    ],
)
def test_make_strategy_builds_what_the_yaml_says(strategy: dict, kind: type, attrs: dict[str, Any]) -> None:
    built = make_strategy(config_with({**strategy, "fraction_fit": 0.5}))
    assert isinstance(built, kind)
    assert built.name == strategy["name"] and built.sampling.fraction_fit == 0.5
    for key, value in attrs.items():
        assert getattr(built, key) == value, key


def plan_problems(make_experiment, strategy: dict, silos: dict[str, int] = FIVE) -> list[str]:
    config, _ = load_config(make_experiment(silos=silos, extra={"strategy": strategy}))
    return [p for p in build_plan(config).problems if "strategy" in p]


def test_plan_checks_krum_against_the_silos_per_round(make_experiment) -> None:
    assert plan_problems(make_experiment, {"name": "krum", "byzantine": 1}) == []  # 5 > 2*1 + 2
    (problem,) = plan_problems(make_experiment, {"name": "krum", "byzantine": 2})
    assert problem == (
        "strategy krum with byzantine=2 needs n > 2f + 2 = 6 updates per round but 5 silos train per round "
        "-> lower strategy.byzantine or add silos"
    )
    # fraction_fit 0.6 of 5 silos trains 3 per round: too few for f = 1
    (problem,) = plan_problems(make_experiment, {"name": "multi_krum", "fraction_fit": 0.6})
    assert "but 3 silos train per round" in problem
    (problem,) = plan_problems(make_experiment, {"name": "multi_krum", "num_selected": 5})
    assert problem.startswith("strategy.num_selected=5 but at most n - f = 4 updates can be selected")


def test_plan_checks_trimmed_mean_and_median(make_experiment) -> None:
    (problem,) = plan_problems(make_experiment, {"name": "trimmed_mean", "beta": 0.1})
    assert problem.startswith("strategy.beta=0.1 trims floor(0.1 x 5) = 0 updates per side")
    assert problem.endswith("-> raise beta to 0.2 or add silos")
    assert plan_problems(make_experiment, {"name": "trimmed_mean", "beta": 0.2}) == []
    # with 3 silos 1/3 would be printed as 0.333, which still trims nothing: the advice rounds up
    (problem,) = plan_problems(make_experiment, {"name": "trimmed_mean"}, silos={"a": 12, "b": 24, "c": 36})
    assert problem.endswith("-> raise beta to 0.334 or add silos")
    assert (
        plan_problems(make_experiment, {"name": "trimmed_mean", "beta": 0.334}, silos={"a": 12, "b": 24, "c": 36}) == []
    )
    (problem,) = plan_problems(make_experiment, {"name": "trimmed_mean", "beta": 0.4}, silos={"a": 12, "b": 24})
    assert problem.endswith("-> use 3 or more silos")
    (problem,) = plan_problems(make_experiment, {"name": "median"}, silos={"a": 12, "b": 24})
    assert "a median of fewer than 3 is a mean" in problem


def test_validate_prints_the_strategy_and_its_parameters(cli, make_experiment) -> None:
    path = make_experiment(extra={"strategy": {"name": "fedadam", "eta": 0.05, "mean_only": []}})
    result = cli("validate", path)
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "strategy fedadam (eta=0.05, beta1=0.9, beta2=0.99, tau=0.001, mean_only=[]): 3 silos train" in out


def test_validate_reports_a_misspelt_strategy_as_one_line(cli, make_experiment) -> None:
    result = cli("validate", make_experiment(extra={"strategy": {"name": "krun", "byzantine": 1}}))
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "strategy.name: unknown strategy 'krun'; did you mean 'krum'?" in lines[0]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_runs_from_yaml(make_experiment, name: str) -> None:
    """Two rounds on the NumPy task, five silos, silos in this process: each learns something."""
    strategy: dict[str, Any] = {"name": name}
    if name == "trimmed_mean":
        strategy["beta"] = 0.2
    if name in ("fedadam", "fedyogi", "fedadagrad"):
        strategy["eta"] = 0.1
    config, text = load_config(make_experiment(folder=name, silos=FIVE, extra={"strategy": strategy}))
    result = run_experiment(config, text)
    assert result.summary["rounds"] == 2 and result.summary["failures"] == 0
    assert result.summary["final"]["accuracy"] > 0.6, result.summary["final"]
    assert all(np.isfinite(v).all() for v in result.parameters.values())
