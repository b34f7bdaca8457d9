"""The ``fedsilo`` command through its real entry point: `validate` and the argument errors of `run`.

Every fedsilo error must reach the user as exactly one readable line on stderr, with the exit
code of its class, and never as a traceback.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml


def one_error_line(result: Any) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_validate_a_valid_experiment_prints_the_plan(cli, make_experiment) -> None:
    result = cli("validate", make_experiment(silos={"north": 12, "east": 24, "south": 36}))
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())  # the console may wrap long lines
    assert "experiment 'exp': 3 silos, 2 rounds" in out
    for name, train, test in (("north", 12, 8), ("east", 24, 10), ("south", 36, 12)):
        assert re.search(rf"{name}\b.*\b{train}\b.*\b{test}\b", out), name
    assert "(numpy): 10 parameters, 2 arrays" in out
    assert "strategy fedavg: 3 silos train, 3 evaluate per round" in out
    assert "(40 examples)" in out
    assert out.endswith("valid")
    assert result.stderr == ""


def _missing_folder(path: Path) -> None:
    shutil.rmtree(path.parent / "data" / "b")


def _no_samples(path: Path) -> None:
    np.savez(path.parent / "data" / "b" / "train.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))


def _edit_yaml(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        spec = yaml.safe_load(path.read_text())
        change(spec)
        path.write_text(yaml.safe_dump(spec))

    return edit


def _task_raising_on_import(path: Path) -> None:
    task = path.parent / "broken_task.py"
    task.write_text("import numpy\nraise ImportError('needs a library this silo lacks')\n")
    _edit_yaml(lambda spec: spec.update(task="broken_task.py"))(path)


def _missing_experiment(path: Path) -> None:
    path.unlink()


CASES = {
    "missing data folder": (_missing_folder, 5, [r"silo 'b'", r"data/b", r"does not exist"]),
    "silo with no samples": (_no_samples, 5, [r"silo 'b'", r"has no (training )?samples"]),
    "min_fit_clients too large": (
        _edit_yaml(lambda spec: spec.update(strategy={"min_fit_clients": 4})),
        5,
        [r"strategy\.min_fit_clients=4 but the experiment has 3 silos"],
    ),
    "task module missing": (
        _edit_yaml(lambda spec: spec.update(task="no_such_task.py")),
        5,
        [r"task module \S*no_such_task\.py does not exist"],
    ),
    "task raises on import": (
        _task_raising_on_import,
        5,
        [r"broken_task\.py failed to import: ImportError: needs a library this silo lacks"],
    ),
    "misspelt key": (
        _edit_yaml(lambda spec: spec.update(roudns=3)),
        2,
        [r"experiment\.yaml: roudns: unknown key \(misspelt\?\)"],
    ),
    "misspelt nested key": (
        _edit_yaml(lambda spec: spec["train"].update(learning_rate=0.1)),
        2,
        [r"train\.learning_rate: unknown key"],
    ),
    "missing experiment file": (_missing_experiment, 2, [r"experiment file \S*experiment\.yaml does not exist"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validate_errors_are_one_line_with_the_right_exit_code(cli, make_experiment, case: str) -> None:
    breakage, code, patterns = CASES[case]
    path = make_experiment()
    breakage(path)
    result = cli("validate", path)
    assert result.exit_code == code
    line = one_error_line(result)
    for pattern in patterns:
        assert re.search(pattern, line), (pattern, line)


def test_validate_reports_every_problem_in_one_run(cli, make_experiment) -> None:
    path = make_experiment(extra={"strategy": {"min_fit_clients": 4}})
    shutil.rmtree(path.parent / "data" / "a")
    shutil.rmtree(path.parent / "data" / "c")
    result = cli("validate", path)
    assert result.exit_code == 5
    line = one_error_line(result)
    assert "3 problems" in line
    assert "silo 'a'" in line and "silo 'c'" in line and "silo 'b'" not in line
    assert "min_fit_clients=4" in line


def test_validate_shows_paths_with_brackets_verbatim(cli, make_experiment) -> None:
    # Folder names are user data, not console markup: "[north]" must not vanish, and "[/x]"
    # must not crash the command with a traceback.
    path = make_experiment(
        extra={"silos": [{"name": "a", "data": "sites/[north]/a"}, {"name": "b", "data": "sites/[/x]/b"}]}
    )
    result = cli("validate", path)
    assert result.exit_code == 5
    line = one_error_line(result)
    assert "sites/[north]/a" in line
    assert "sites/[/x]/b" in line


def test_run_without_an_experiment(cli) -> None:
    result = cli("run")
    assert result.exit_code == 2
    assert "no experiment given" in one_error_line(result)


def test_run_resume_refuses_a_second_config(cli, make_experiment, tmp_path: Path) -> None:
    result = cli("run", make_experiment(), "--resume", tmp_path)
    assert result.exit_code == 2
    assert "--resume continues a run with its own config" in one_error_line(result)


def test_run_a_missing_experiment_file(cli, tmp_path: Path) -> None:
    result = cli("run", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "nope.yaml does not exist" in one_error_line(result)


def test_run_an_invalid_plan_stops_before_making_a_run_folder(cli, make_experiment) -> None:
    path = make_experiment()
    shutil.rmtree(path.parent / "data" / "b")
    result = cli("run", path)
    assert result.exit_code == 5
    assert "silo 'b'" in one_error_line(result)
    assert not (path.parent / "runs").exists()


def test_the_summary_compares_models_by_accuracy_or_the_tasks_own_accuracy() -> None:
    from fedsilo.cli.io import headline_metric

    assert headline_metric({"accuracy": 0.9, "tstr_accuracy": 0.5}) == "accuracy"
    assert headline_metric({"tstr_balanced_accuracy": 0.6, "tstr_accuracy": 0.7, "loss": None}) == "tstr_accuracy"
    assert headline_metric({"generator_bias": 1.0}) == "accuracy"  # nothing to compare by: the table shows "-"


def test_validate_of_many_silos_stays_short(cli, make_experiment) -> None:
    silos = {f"s{i:03d}": 3 for i in range(150)}
    result = cli("validate", make_experiment(silos=silos, extra={"strategy": {"fraction_fit": 0.1}}))
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "experiment 'exp': 150 silos, 2 rounds" in out
    assert "s019" in out and "s020" not in out
    assert "130 more" in out and re.search(r"130 not\s", out)  # the rest: counted by their note
    assert "strategy fedavg: 15 silos train, 150 evaluate per round" in out
    assert len(result.stdout.splitlines()) < 80  # 20 rows (wrapped in a narrow terminal), not 150


def test_data_split_names_n_silos_and_prints_a_short_table(cli, tmp_path: Path) -> None:
    source = tmp_path / "source.npz"
    rng = np.random.default_rng(0)
    np.savez(source, x_train=rng.normal(size=(300, 2)), y_train=np.arange(300) % 3, x_test=np.zeros((6, 2)),
             y_test=np.zeros(6, np.int64))  # fmt: skip
    result = cli("data", "split", source, "--out", tmp_path / "many", "--num-silos", "25")
    assert result.exit_code == 0, result.stderr
    split = json.loads((tmp_path / "many" / "split.json").read_text())
    assert [s["name"] for s in split["silos"]] == [f"silo_{i:05d}" for i in range(25)]
    out = " ".join(result.stdout.split())
    assert "silo_00019" in out and "silo_00020" not in out and "... 5 more" in out
    assert "total (silos)" in out and "server" in out
    both = cli("data", "split", source, "--out", tmp_path / "x", "--num-silos", "2", "--silos", "a,b")
    assert both.exit_code == 2 and "give either --silos a,b,c or --num-silos N" in both.stderr
