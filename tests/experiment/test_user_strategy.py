"""A strategy of your own, named in the YAML as ``FILE.py:ClassName``: it validates, runs and resumes
like a built-in one, and everything that can be wrong with it is one line of ``fedsilo validate``."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo import Sampling
from fedsilo.errors import PlanError
from fedsilo.experiment.config import load_config
from fedsilo.experiment.plan import build_plan, make_strategy
from fedsilo.runtime.launch import run_experiment
from fedsilo.runtime.run import load_run_config
from fedsilo.server.checkpoint import checkpoint_path, load_checkpoint

MINE = Path(__file__).resolve().parents[1] / "tasks" / "my_strategy.py"
FIVE = {"a": 12, "b": 24, "c": 36, "d": 16, "e": 20}
GOOD = """
from fedsilo import StrategyExtras, StrategyState
from fedsilo.strategy.fedavg import WeightedMeanAggregation


class Mean:
    individual_updates = False

    def __init__(self, sampling, scale=1.0):
        self.sampling, self.scale, self.name = sampling, scale, "mean"

    def initial_state(self, parameters):
        return StrategyState()

    def fit_extras(self, round, state):
        return StrategyExtras()

    def begin(self, round, global_parameters, state):
        return WeightedMeanAggregation(global_parameters, state)
"""


def experiment(make_experiment, strategy: dict[str, Any], code: str | None = None, **kwargs: Any) -> Path:
    """An experiment whose strategy's file sits beside its YAML: the README's, or ``code``."""
    path = make_experiment(extra={"strategy": strategy, **kwargs.pop("extra", {})}, **kwargs)
    target = path.parent / "my_strategy.py"
    if code is None:
        shutil.copyfile(MINE, target)
    else:
        target.write_text(textwrap.dedent(code))
    return path


def problems_of(path: Path) -> list[str]:
    config, _ = load_config(path)
    return [p for p in build_plan(config).problems]


def test_the_file_is_relative_to_the_yaml_and_the_class_is_built_with_the_sampling(
    make_experiment, monkeypatch
) -> None:
    path = experiment(make_experiment, {"name": "my_strategy.py:TrimmedFedAvg", "beta": 0.4, "fraction_fit": 0.5})
    monkeypatch.chdir(path.parent.parent)  # not the YAML's folder
    config, _ = load_config(path)
    assert config.strategy.name == f"{path.parent / 'my_strategy.py'}:TrimmedFedAvg"
    plan = build_plan(config)
    assert plan.problems == ()
    assert type(plan.strategy).__name__ == "TrimmedFedAvg"
    assert plan.strategy.sampling == Sampling(fraction_fit=0.5) and plan.strategy.beta == 0.4  # type: ignore[attr-defined]
    assert make_strategy(config).sampling == Sampling(fraction_fit=0.5)


def test_validate_prints_it_with_its_parameters(cli, make_experiment, monkeypatch) -> None:
    path = experiment(make_experiment, {"name": "my_strategy.py:TrimmedFedAvg", "beta": 0.4})
    monkeypatch.chdir(path.parent)
    result = cli("validate", "experiment.yaml")
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "strategy my_strategy.py:TrimmedFedAvg (beta=0.4): 3 silos train" in out


def test_a_resumed_run_ends_with_the_model_and_state_of_an_uninterrupted_one(make_experiment) -> None:
    strategy = {"name": "my_strategy.py:TrimmedFedAvg", "beta": 0.2}
    straight, _ = load_config(experiment(make_experiment, strategy, folder="straight", silos=FIVE, rounds=3))
    full = run_experiment(straight, "")
    stopped, _ = load_config(experiment(make_experiment, strategy, folder="stopped", silos=FIVE, rounds=2))
    part = run_experiment(stopped, "")
    saved = json.loads((Path(part.run_dir) / "config.json").read_text())
    assert saved["strategy"] == {**straight.strategy.model_dump(), "name": stopped.strategy.name}  # absolute
    again, _ = load_run_config(Path(part.run_dir), rounds=3)  # what `fedsilo run --resume` reads
    resumed = run_experiment(again, "", resume=part.run_dir)
    assert resumed.run_dir == part.run_dir
    for name, value in full.parameters.items():
        np.testing.assert_array_equal(resumed.parameters[name], value, err_msg=name)
    ckpt = load_checkpoint(checkpoint_path(Path(part.run_dir) / "checkpoints", 2))
    assert ckpt.state.values == {"dropped": 2}  # one of five silos each round: the state travelled
    final = load_checkpoint(checkpoint_path(Path(part.run_dir) / "checkpoints", 3))
    assert final.state.values == {"dropped": 3}


def test_a_mean_based_strategy_of_your_own_may_run_with_secure_aggregation_and_dp(make_experiment) -> None:
    privacy = {"secure_aggregation": True, "dp": {"noise_multiplier": 1.0}}
    path = experiment(make_experiment, {"name": "my_strategy.py:Mean"}, GOOD, extra={"privacy": privacy})
    assert [p for p in problems_of(path) if "strategy" in p] == []


def test_a_mean_based_strategy_of_your_own_runs_inside_central_dp(make_experiment) -> None:
    dp = {"noise_multiplier": 0.5, "clip_norm": 10.0}
    path = experiment(make_experiment, {"name": "my_strategy.py:Mean"}, GOOD, extra={"privacy": {"dp": dp}})
    config, _ = load_config(path)
    result = run_experiment(config, "")
    assert result.summary["rounds"] == 2 and result.summary["failures"] == 0
    assert result.summary["privacy"]["central"]["epsilon"] > 0 and result.summary["privacy"]["central"]["rounds"] == 2


def test_one_that_does_not_declare_it_is_refused_with_both(make_experiment) -> None:
    privacy = {"secure_aggregation": True, "dp": {"noise_multiplier": 1.0}}
    path = experiment(make_experiment, {"name": "my_strategy.py:TrimmedFedAvg"}, extra={"privacy": privacy})
    means = "use fedavg, fedprox, fedavgm, fedadagrad, fedadam or fedyogi"
    fix = "-> if it needs only the example-weighted mean of the updates, set `individual_updates = False` in "
    fix += "TrimmedFedAvg"
    assert [p for p in problems_of(path) if "my_strategy" in p] == [
        "privacy.secure_aggregation: strategy my_strategy.py:TrimmedFedAvg needs every silo's own update, "
        f"which secure aggregation hides ({means}) {fix}",
        "privacy.dp releases a noised mean, but strategy my_strategy.py:TrimmedFedAvg looks at each update on its "
        f"own ({means} with privacy.dp) {fix}",
    ]


NOT_A_STRATEGY = """
class Half:
    def __init__(self, sampling):
        self.sampling = sampling

    def begin(self, round, global_parameters, state):
        return None

helper = 3
"""
#: GOOD with one thing wrong: (what is replaced, by what).
BROKEN = {
    "needs shift": ("sampling, scale=1.0):", "sampling, shift, scale=1.0):"),
    "no sampling": (
        "sampling, scale=1.0):\n        self.sampling",
        "scale=1.0):\n        self.sampling = None\n        _",
    ),
    "raises": (
        '"mean"',
        '"mean"\n        if scale < 0:\n            raise ValueError(f"scale must be >= 0,\\n got {scale}")',
    ),
    "name 7": ('scale, "mean"', "scale, 7"),
    "sampling dropped": ("self.sampling, self.scale", "self.sampling_, self.scale"),
    "declaration 'no'": ("individual_updates = False", 'individual_updates = "no"'),
}
ENSURE = "-> give it name, sampling, initial_state(), fit_extras() and begin(), as in the README's 'Your own strategy'"
TAKES_BETA = "(misspelt?; TrimmedFedAvg takes beta)"


def broken(what: str) -> str:
    old, new = BROKEN[what]
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    ("strategy", "code", "expected"),
    [
        ({"name": "nowhere.py:TrimmedFedAvg"}, None, [
            "strategy.name: {dir}/nowhere.py does not exist -> put the strategy's file beside the experiment YAML, "
            "or fix its path (relative to the YAML)"]),
        ({"name": "my_strategy.py:TrimmedFedAvg"}, "x = 1 / 0\n", [
            "strategy.name: {dir}/my_strategy.py failed to import: ZeroDivisionError: division by zero "
            "-> run `python {dir}/my_strategy.py` to see the full error"]),
        ({"name": "my_strategy.py:TrimedFedAvg"}, None, [
            "strategy.name: my_strategy.py defines no TrimedFedAvg -> did you mean TrimmedFedAvg?"]),
        ({"name": "my_strategy.py:Nothing"}, NOT_A_STRATEGY, [
            "strategy.name: my_strategy.py defines no Nothing -> name one of its classes: Half"]),
        ({"name": "my_strategy.py:helper"}, NOT_A_STRATEGY, [
            "strategy.name: my_strategy.py:helper is not a class (it is of type int) -> name your strategy's class"]),
        ({"name": "my_strategy.py:Half"}, NOT_A_STRATEGY, [
            "strategy.name: my_strategy.py:Half is not a fedsilo Strategy: it has no initial_state, fit_extras "
            + ENSURE]),
        ({"name": "my_strategy.py:TrimmedFedAvg", "beta": 0.2, "gamma": 1, "betta": 2}, None, [
            f"strategy.gamma: unknown key for my_strategy.py:TrimmedFedAvg {TAKES_BETA} "
            "-> remove it, or add gamma to TrimmedFedAvg's constructor",
            f"strategy.betta: unknown key for my_strategy.py:TrimmedFedAvg {TAKES_BETA} "
            "-> remove it, or add betta to TrimmedFedAvg's constructor"]),
        ({"name": "my_strategy.py:Mean"}, broken("needs shift"), [
            "strategy.shift: my_strategy.py:Mean needs shift (its constructor has no default) -> set strategy.shift"]),
        ({"name": "my_strategy.py:Mean"}, broken("no sampling"), [
            "strategy.name: my_strategy.py:Mean's constructor takes no sampling -> add a `sampling: fedsilo.Sampling` "
            "parameter (fedsilo passes one, from strategy.fraction_fit, min_fit_clients, ...)"]),
        ({"name": "my_strategy.py:Mean", "scale": -1}, broken("raises"), [
            "strategy.name: my_strategy.py:Mean(scale=-1) raised ValueError: scale must be >= 0, got -1 "
            "-> fix the strategy's keys in the YAML"]),
        ({"name": "my_strategy.py:Mean"}, broken("name 7"), [
            "strategy.name: my_strategy.py:Mean().name is 7, not a string "
            '-> give the strategy a name, e.g. a field `name: str = "mine"`']),
        ({"name": "my_strategy.py:Mean"}, broken("sampling dropped"), [
            "strategy.name: my_strategy.py:Mean().sampling is not the Sampling it was given "
            "-> keep the constructor's sampling argument as the strategy's sampling"]),
        ({"name": "my_strategy.py:Mean"}, broken("declaration 'no'"), [
            "strategy.name: my_strategy.py:Mean.individual_updates is 'no' -> set it to False if the strategy "
            "needs only the example-weighted mean of the updates, else True"]),
    ],
)  # fmt: skip
def test_each_problem_is_one_line_naming_its_key(make_experiment, strategy, code, expected) -> None:
    path = experiment(make_experiment, strategy, code)
    found = [p for p in problems_of(path) if p.startswith("strategy")]
    assert found == [line.format(dir=path.parent) for line in expected]
    config, _ = load_config(path)
    with pytest.raises(PlanError):
        make_strategy(config)


def test_the_trimmed_round_of_the_readme_drops_the_silos_that_moved_most() -> None:
    from fedsilo import FitRes

    mine = _module(MINE)
    strategy = mine.TrimmedFedAvg(Sampling(), beta=0.4)
    g = {"w": np.zeros(2, np.float32)}
    state = strategy.initial_state(g)
    agg = strategy.begin(1, g, state)
    for silo, w, n in (("a", [1, 1], 1), ("b", [9, 9], 1), ("c", [2, 0], 3), ("d", [-8, 0], 2), ("e", [0, 3], 1)):
        agg.add(FitRes(silo, {"w": np.array(w, np.float32)}, n))
    params, state = agg.finish()  # floor(0.4 * 5) = 2 dropped: b (162) and d (64)
    np.testing.assert_allclose(params["w"], [(1 + 2 * 3 + 0) / 5, (1 + 0 + 3) / 5])
    assert params["w"].dtype == np.float32 and state.values == {"dropped": 2}


def test_validate_reports_a_broken_strategy_in_one_line(cli, make_experiment) -> None:
    path = experiment(make_experiment, {"name": "my_strategy.py:TrimmedFedAvg", "gamma": 1})
    result = cli("validate", path)
    assert result.exit_code == 5 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert f"strategy.gamma: unknown key for my_strategy.py:TrimmedFedAvg {TAKES_BETA}" in lines[0]


def _module(path: Path) -> Any:
    from fedsilo.silo.task import import_task_module

    return import_task_module(path)
