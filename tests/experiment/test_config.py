"""experiment/config.py: the YAML schema; misspelt keys and every other problem name their field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fedsilo.errors import ConfigError
from fedsilo.experiment.config import ExperimentConfig, load_config, parse_config


def minimal(**extra: Any) -> dict[str, Any]:
    return {"name": "exp", "task": "task.py", "rounds": 3, "silos": [{"name": "a", "data": "data/a"}], **extra}


def error_of(data: Any, base: Path = Path("/base")) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base, "exp.yaml")
    line = info.value.one_line()
    assert "\n" not in line
    assert info.value.exit_code == 2
    return line


def test_minimal_config_gets_the_defaults() -> None:
    config = parse_config(minimal(), Path("/base"))
    assert config.strategy.name == "fedavg"
    assert (config.strategy.fraction_fit, config.strategy.min_fit_clients) == (1.0, 1)
    assert (config.train.epochs, config.train.batch_size, config.train.optimizer) == (1, 32, "sgd")
    assert config.seed == 0 and config.runtime.workers == "auto"
    assert config.server.data is None and config.server.round_timeout_s == 600.0
    assert config.server.evaluate_every == 1
    assert config.train_settings().lr == 0.01


def test_a_misspelt_top_level_key_is_an_error_naming_it() -> None:
    line = error_of(minimal(roudns=5))
    assert line.startswith("exp.yaml: roudns: unknown key (misspelt?)")


def test_a_misspelt_nested_key_names_its_path() -> None:
    assert "train.lrr: unknown key (misspelt?)" in error_of(minimal(train={"lrr": 0.1}))
    assert "strategy.min_fit_client: unknown key" in error_of(minimal(strategy={"min_fit_client": 2}))
    assert "silos.0.folder: unknown key" in error_of(minimal(silos=[{"name": "a", "data": "d", "folder": "x"}]))


def test_several_errors_are_reported_at_once() -> None:
    data = minimal(rounds=0, roundz=3, train={"lr": -1, "optimizer": "rmsprop"})
    data["silos"] = [{"name": "server", "data": "a"}, {"name": "ok", "data": "b"}]
    line = error_of(data)
    for field in ("rounds:", "roundz: unknown key", "train.lr:", "train.optimizer:", "silos.0.name:"):
        assert field in line, field
    assert "silos.1" not in line


def test_a_missing_required_key_is_named() -> None:
    data = minimal()
    del data["rounds"]
    assert "rounds: Field required" in error_of(data)


def test_a_silo_without_data_says_the_key_is_missing() -> None:
    line = error_of(minimal(silos=[{"name": "a"}]))
    assert "silos.0.data" in line
    assert "required" in line.lower()


@pytest.mark.parametrize("name", ["server", "bad name", "-leading", "a/b", "x" * 65, "", "é"])
def test_invalid_silo_names(name: str) -> None:
    line = error_of(minimal(silos=[{"name": name, "data": "d"}]))
    assert "silos.0.name" in line


@pytest.mark.parametrize("name", ["a", "hospital_a", "Site-2", "x" * 64])
def test_valid_silo_names(name: str) -> None:
    assert parse_config(minimal(silos=[{"name": name, "data": "d"}]), Path("/b")).silos[0].name == name


def test_duplicate_silo_names() -> None:
    data = minimal(silos=[{"name": "a", "data": "x"}, {"name": "b", "data": "y"}, {"name": "a", "data": "z"}])
    assert "silo names must be unique; repeated: a" in error_of(data)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"strategy": {"fraction_fit": 0}}, "strategy.fraction_fit"),
        ({"strategy": {"fraction_fit": 1.5}}, "strategy.fraction_fit"),
        ({"strategy": {"min_fit_clients": 0}}, "strategy.min_fit_clients"),
        ({"train": {"device": "gpu"}}, "train.device"),
        ({"runtime": {"workers": -1}}, "runtime.workers"),
        ({"server": {"round_timeout_s": 0}}, "server.round_timeout_s"),
        ({"name": "has space"}, "name"),
        ({"silos": []}, "silos"),
    ],
)
def test_out_of_range_values_name_their_field(extra: dict[str, Any], field: str) -> None:
    assert f"{field}:" in error_of(minimal(**extra))


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project" / "experiments"
    folder.mkdir(parents=True)
    spec = minimal(
        task="task.py",
        silos=[{"name": "a", "data": "../data/a"}, {"name": "b", "data": "/abs/b"}],
        server={"data": "data/server"},
        output="out",
        prepare={"dataset": "pneumoniamnist", "out": "../prepared"},
    )
    (folder / "exp.yaml").write_text(yaml.safe_dump(spec))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the current folder must not matter
    config, text = load_config(Path("..") / "project" / "experiments" / "exp.yaml")
    base = folder.resolve()
    assert config.task == base / "task.py"
    assert config.silos[0].data == (base / ".." / "data" / "a").resolve()
    assert config.silos[1].data == Path("/abs/b")
    assert config.server.data == base / "data" / "server"
    assert config.output == base / "out"
    assert config.prepare is not None and config.prepare.out == (base / ".." / "prepared").resolve()
    assert text == (folder / "exp.yaml").read_text()


def test_a_missing_experiment_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in info.value.one_line()


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\nrounds: 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", ""])
def test_a_top_level_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


def test_config_is_frozen() -> None:
    config = parse_config(minimal(), Path("/b"))
    with pytest.raises(Exception, match="frozen"):
        config.rounds = 5  # type: ignore[misc]
    assert isinstance(config, ExperimentConfig)


def test_adaptive_clipping_is_refused_with_secure_aggregation() -> None:
    silos = [{"name": n, "data": f"data/{n}"} for n in "abc"]
    dp = {"noise_multiplier": 1.0, "adaptive": True}
    line = error_of(minimal(silos=silos, privacy={"secure_aggregation": True, "dp": dp}))
    assert "privacy.dp.adaptive" in line and "secure aggregation hides" in line
    fixed = parse_config(
        minimal(silos=silos, privacy={"secure_aggregation": True, "dp": {"noise_multiplier": 1.0}}), Path("/b")
    )
    assert fixed.privacy.dp is not None and fixed.privacy.secure_aggregation is not None


def test_secure_aggregation_settings_that_would_fail_every_round_are_refused_at_once() -> None:
    silos = [{"name": n, "data": f"data/{n}"} for n in "abcd"]
    sa = {"threshold": 5, "neighbours": 3, "clip": 1e6, "frac_bits": 45}
    line = error_of(minimal(silos=silos, privacy={"secure_aggregation": sa}))
    assert "threshold=5 is more than the 4 share holders" in line
    assert "neighbours=3 must be even" in line
    assert "overflows the 64-bit ring" in line
    ok = {"threshold": 3, "neighbours": 2, "clip": 8, "frac_bits": 16, "ring_bits": 32}
    assert parse_config(minimal(silos=silos, privacy={"secure_aggregation": ok}), Path("/b")).privacy.secure_aggregation


def test_central_evaluation_every_n_rounds_must_be_at_least_one() -> None:
    assert parse_config(minimal(server={"evaluate_every": 5}), Path("/base")).server.evaluate_every == 5
    assert "server.evaluate_every: Input should be greater than or equal to 1" in error_of(
        minimal(server={"evaluate_every": 0})
    )
