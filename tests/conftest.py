"""Shared fixtures: small silo folders, experiment YAMLs and the real CLI, all inside tmp_path."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from helpers import LINEAR_TASK, TORCH_TASK, write_silo_folder


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def linear_task() -> Path:
    return LINEAR_TASK


@pytest.fixture
def torch_task() -> Path:
    return TORCH_TASK


@pytest.fixture
def write_silo() -> Callable[..., Path]:
    return write_silo_folder


@pytest.fixture
def make_experiment(tmp_path: Path) -> Callable[..., Path]:
    """Write silo folders and an experiment YAML under ``tmp_path/<folder>``; returns the YAML's path.

    Paths in the YAML are relative to it (``data/a``, ``runs``), as a user writes them.
    ``silos`` maps names to training-set sizes (unequal by default, so weighting matters);
    ``extra`` is merged into the YAML mapping last.
    """

    def make(
        folder: str = "exp",
        silos: Mapping[str, int] | None = None,
        rounds: int = 2,
        workers: int | str = 0,
        server: bool = True,
        task: Path | str = LINEAR_TASK,
        seed: int = 0,
        extra: Mapping[str, Any] | None = None,
        write_data: bool = True,
    ) -> Path:
        root = tmp_path / folder
        root.mkdir(parents=True, exist_ok=True)
        silos = dict(silos if silos is not None else {"a": 12, "b": 24, "c": 36})
        if write_data:
            for i, (name, n) in enumerate(silos.items()):
                write_silo_folder(root / "data" / name, n, n_test=8 + 2 * i, seed=100 + i)
            if server:
                write_silo_folder(root / "data" / "server", 1, n_test=40, seed=7)
        spec: dict[str, Any] = {
            "name": "exp",
            "task": str(task),
            "silos": [{"name": name, "data": f"data/{name}"} for name in silos],
            "rounds": rounds,
            "seed": seed,
            "train": {"epochs": 1, "batch_size": 8, "lr": 0.5, "device": "cpu"},
            "runtime": {"workers": workers},
            "output": "runs",
        }
        if server:
            spec["server"] = {"data": "data/server"}
        spec = _merge(spec, extra or {})
        path = root / "experiment.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return make


class Cli:
    """The real ``fedsilo`` command, run in this process with stdout and stderr kept apart."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str | Path) -> Any:
        from fedsilo.cli import app

        return self.runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("FEDSILO_DEBUG", raising=False)  # with it set, errors are re-raised
    return Cli()


def only_run_folder(output: Path) -> Path:
    runs = [p for p in Path(output).iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run folder in {output}, found {runs}"
    return runs[0]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture
def run_folder() -> Callable[[Path], Path]:
    return only_run_folder


@pytest.fixture
def metrics_of() -> Callable[[Path], list[dict[str, Any]]]:
    return read_metrics
