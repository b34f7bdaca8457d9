"""The README's "Your own strategy": its code and YAML, exactly as printed, validate, run and resume.

The code block must be ``tests/tasks/my_strategy.py`` to the character, so the file other tests use
and the README cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedsilo import load_file

ROOT = Path(__file__).resolve().parents[1]
FIVE = {"a": 12, "b": 24, "c": 36, "d": 16, "e": 20}


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Your own strategy\n")
    return text[start : text.index("\n## ", start)]


def block(kind: str) -> str:
    (found,) = re.findall(rf"```{kind}\n(.*?)```", section(), re.S)
    return found


def test_the_readme_shows_the_file_in_the_repository() -> None:
    assert block("python") == (ROOT / "tests" / "tasks" / "my_strategy.py").read_text()


def experiment(make_experiment, folder: str, rounds: int, extra: dict[str, Any] | None = None) -> Path:
    strategy = yaml.safe_load(block("yaml"))["strategy"]
    path = make_experiment(folder=folder, silos=FIVE, rounds=rounds, extra={"strategy": {**strategy, **(extra or {})}})
    (path.parent / "my_strategy.py").write_text(block("python"))
    return path


def test_the_readme_strategy_validates_runs_and_resumes(cli, make_experiment, run_folder, monkeypatch) -> None:
    straight = experiment(make_experiment, "straight", rounds=3)
    stopped = experiment(make_experiment, "stopped", rounds=2)
    monkeypatch.chdir(straight.parent)
    result = cli("validate", "experiment.yaml")
    assert result.exit_code == 0, result.stderr
    assert "strategy my_strategy.py:TrimmedFedAvg (beta=0.2)" in " ".join(result.stdout.split())
    assert cli("run", straight, "--quiet").exit_code == 0
    assert cli("run", stopped, "--quiet").exit_code == 0
    run = run_folder(stopped.parent / "runs")
    monkeypatch.chdir(ROOT)  # --resume reads the run folder's config.json, wherever it is started
    result = cli("run", "--resume", run, "--rounds", "3", "--quiet")
    assert result.exit_code == 0, result.stderr
    full = load_file(run_folder(straight.parent / "runs") / "model.safetensors")
    resumed = load_file(run / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name, value in full.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_the_problem_the_readme_quotes_is_the_one_validate_prints(cli, make_experiment) -> None:
    (quoted,) = re.findall(r"`(strategy\.gamma: [^`]*)`", section())
    result = cli("validate", experiment(make_experiment, "gamma", rounds=1, extra={"gamma": 1}))
    assert result.exit_code == 5 and quoted in " ".join(result.stderr.split())
