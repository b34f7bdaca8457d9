"""Every number in the experiment YAML is finite and bounded: the schema refuses, naming the key.

The keys are found by walking the schema itself (every section, every strategy), so a numeric key
added later is covered without a change here.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from fedsilo.errors import ConfigError
from fedsilo.experiment.bounds import MAX_SEED, MAX_WAIT_S
from fedsilo.experiment.config import ExperimentConfig, parse_config
from fedsilo.experiment.strategy_registry import BUILTINS

BASE: dict[str, Any] = {
    "name": "exp",
    "task": "task.py",
    "silos": [{"name": n, "data": f"data/{n}"} for n in "abc"],
    "rounds": 2,
    "prepare": {"dataset": "pneumoniamnist", "out": "data"},
    "privacy": {"dp": {"noise_multiplier": 1.0}, "local_dp": {"noise_multiplier": 1.0}, "secure_aggregation": {}},
}


def _numeric(annotation: Any) -> tuple[str | None, type[BaseModel] | None]:
    """('int' | 'float' | 'floats' | None, a nested model or None) of a field's annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [_numeric(a) for a in typing.get_args(annotation)]
        return next((k for k, _ in kinds if k), None), next((m for _, m in kinds if m), None)
    if origin is typing.Annotated:
        return _numeric(typing.get_args(annotation)[0])
    if origin is list:
        return ("floats" if typing.get_args(annotation)[0] in (float,) or _numeric(typing.get_args(annotation)[0])[0]
                == "float" else None), None  # fmt: skip
    if annotation is float:
        return "float", None
    if annotation is int:
        return "int", None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return None, annotation
    return None, None


def numeric_keys(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    for name, info in model.model_fields.items():
        if path == () and name == "strategy":
            continue  # a union: each strategy below
        kind, nested = _numeric(info.annotation)
        if kind:
            yield (*path, name), kind
        if nested is not None:
            yield from numeric_keys(nested, (*path, name))


def cases() -> Iterator[tuple[dict[str, Any], tuple[str, ...], str]]:
    for key, kind in numeric_keys(ExperimentConfig):
        yield BASE, key, kind
    for name, model in BUILTINS.items():
        for key, kind in numeric_keys(model):
            if key != ("name",):
                yield {**BASE, "strategy": {"name": name}}, ("strategy", *key), kind
    yield {**BASE, "strategy": {"name": "mine.py:Mine", "my_rate": 0.1}}, ("strategy", "my_rate"), "float"


def with_value(base: dict[str, Any], key: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(base)
    node = data
    for part in key[:-1]:
        node = node.setdefault(part, {})
    node[key[-1]] = value
    return data


BAD = {"float": [float("inf"), float("nan"), float("-inf")], "int": [2**64], "floats": [[1.0, float("inf")]]}
CASES = [(base, key, value) for base, key, kind in cases() for value in BAD[kind]]


def test_the_walk_finds_every_section() -> None:
    found = {key for _, key, _ in CASES}
    for key in [("seed",), ("rounds",), ("server", "heartbeat_s"), ("server", "round_timeout_s"), ("train", "lr"),
                ("runtime", "workers"), ("prepare", "seed"), ("prepare", "sizes"), ("strategy", "mu"),
                ("privacy", "dp", "clip_norm"), ("privacy", "secure_aggregation", "step_timeout_s"),
                ("compression", "topk_fraction"), ("strategy", "num_selected")]:  # fmt: skip
        assert key in found, key
    assert len(CASES) > 80


@pytest.mark.parametrize(("base", "key", "value"), CASES, ids=[f"{'.'.join(k)}={v}" for _, k, v in CASES])
def test_a_value_out_of_range_is_refused_naming_its_key(base: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(with_value(base, key, value), Path("/exp"))
    named = (".".join(key), ": ".join(key))  # a strategy of your own: its check runs on the whole section
    assert any(n in info.value.message for n in named), info.value.message


def test_the_base_itself_is_valid_up_to_its_cross_checks() -> None:
    plain = {k: v for k, v in BASE.items() if k != "privacy"}
    assert parse_config(plain, Path("/exp")).prepare is not None


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        (("seed",), 18446744073709551616, f"less than or equal to {MAX_SEED}"),
        (("seed",), -5, "greater than or equal to 0"),
        (("server", "round_timeout_s"), float("inf"), "finite number"),
        (("server", "heartbeat_s"), 1e12, f"less than or equal to {MAX_WAIT_S:g}"),
        (("server", "wait_timeout_s"), 30 * 24 * 3600, "less than or equal to"),
        (("runtime", "workers"), 10**6, "a count up to 1024"),
        (("prepare", "sizes"), [1.0, -2.0], "greater than 0"),
        (("privacy", "dp", "clip_learning_rate"), 1000.0, "less than or equal to 10"),
    ],
)
def test_the_issues_values_are_refused(key: tuple[str, ...], value: Any, why: str) -> None:
    base = {k: v for k, v in BASE.items() if k != "privacy"}
    if key[0] == "privacy":
        base["privacy"] = {"dp": {"noise_multiplier": 1.0}}
    with pytest.raises(ConfigError, match=why) as info:
        parse_config(with_value(base, key, value), Path("/exp"))
    assert ".".join(key) in info.value.message


def test_the_bounds_themselves_are_accepted() -> None:
    data = with_value(with_value(BASE, ("seed",), MAX_SEED), ("server", "round_timeout_s"), MAX_WAIT_S)
    data = {k: v for k, v in data.items() if k != "privacy"}
    config = parse_config(data, Path("/exp"))
    assert (config.seed, config.server.round_timeout_s) == (MAX_SEED, MAX_WAIT_S)


def test_validate_says_it_in_one_line(cli, make_experiment) -> None:
    path = make_experiment(extra={"seed": 18446744073709551616, "server": {"heartbeat_s": 1e12}})
    result = cli("validate", path)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    line = " ".join(result.stderr.split())
    assert "seed: Input should be less than or equal to 4294967295" in line
    assert "server.heartbeat_s: Input should be less than or equal to 604800" in line


def test_the_seed_option_is_bounded_as_the_yaml_is(cli, make_experiment) -> None:
    result = cli("run", make_experiment(), "--seed", "-5")
    assert result.exit_code == 2 and "Traceback" not in result.stderr + result.stdout
    assert "--seed" in result.stderr
