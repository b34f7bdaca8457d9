"""A task's own code that fails or returns the wrong thing is one line naming the function, in
``validate`` and ``run`` alike; a silo's data is checked where the client loads it (items 9, 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.errors import DataError, TaskError
from fedsilo.silo.task import TaskModule
from helpers import write_silo_folder

LINEAR = "from linear_numpy import evaluate, load_data, model, train\n"
TASKS = {
    "model_raises": "def model():\n    raise RuntimeError('no GPU here')\n",
    "load_data_none": LINEAR.replace("load_data, ", "") + "def load_data(folder, split):\n    return None\n",
    "load_data_raises": LINEAR.replace("load_data, ", "")
    + "def load_data(folder, split):\n    raise KeyError('pixels')\n",
}


def task_file(tmp_path: Path, kind: str) -> Path:
    from helpers import TASKS as TASKS_DIR

    path = tmp_path / f"{kind}.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(TASKS_DIR)!r})\n" + TASKS[kind])
    return path


def test_a_model_that_raises_is_a_task_error_naming_model(tmp_path: Path) -> None:
    task = TaskModule.load(task_file(tmp_path, "model_raises"))
    with pytest.raises(TaskError, match=r"model\(\) in .*model_raises.py raised RuntimeError: no GPU here") as info:
        task.build_model(0)
    assert "model()" in (info.value.fix or "")


@pytest.mark.parametrize(
    ("kind", "what"),
    [("load_data_none", "returned NoneType"), ("load_data_raises", "raised KeyError: 'pixels'")],
)
def test_a_load_data_that_fails_names_the_folder_and_split(tmp_path: Path, kind: str, what: str) -> None:
    folder = write_silo_folder(tmp_path / "a", 10)
    task = TaskModule.load(task_file(tmp_path, kind))
    with pytest.raises(TaskError, match=rf"load_data\({folder}, 'train'\) in .*{kind}.py {what}"):
        task.load_data([folder], "train")


@pytest.mark.parametrize("kind", ["model_raises", "load_data_none", "load_data_raises"])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_validate_and_run_say_it_in_one_line(cli, make_experiment, tmp_path: Path, kind: str, command: str) -> None:
    path = make_experiment(task=task_file(tmp_path, kind))
    result = cli(command, path)
    assert result.exit_code == 5, result.stderr  # a plan problem, as a task that fails to import is
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert ("model()" if kind == "model_raises" else "load_data(") in " ".join(result.stderr.split())


def test_a_data_path_that_is_a_file_is_not_called_missing(cli, make_experiment, torch_task: Path) -> None:
    path = make_experiment(task=torch_task)  # no load_data of its own: the default loader needs a folder
    folder = path.parent / "data" / "b"
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()
    folder.write_text("not a folder")
    result = cli("validate", path)
    line = " ".join(result.stderr.split())
    assert result.exit_code != 0 and "is a file, not a folder" in line and "does not exist" not in line


def test_a_default_loader_on_a_file_is_not_called_missing(tmp_path: Path, torch_task: Path, linear_task: Path) -> None:
    from fedsilo.data.loaders import check_silo_folder, load_split

    (tmp_path / "a").write_text("x")
    for read in (lambda: load_split(tmp_path / "a", "train"), lambda: check_silo_folder(tmp_path / "a")):
        with pytest.raises(DataError, match="is a file, not a folder"):
            read()
    with pytest.raises(DataError, match="is a file, not a folder"):
        TaskModule.load(torch_task).load_data([tmp_path / "a"], "train")
    # a task's own load_data may read one file per silo (examples/toy_linear reads a CSV): its own error
    with pytest.raises(TaskError, match="NotADirectoryError"):
        TaskModule.load(linear_task).load_data([tmp_path / "a"], "train")
    with pytest.raises(DataError, match="does not exist"):
        TaskModule.load(linear_task).load_data([tmp_path / "b"], "train")


def test_nan_pixels_name_the_silos_folder_and_split(cli, make_experiment) -> None:
    path = make_experiment(workers=0)
    folder = path.parent / "data" / "b"
    with np.load(folder / "test.npz") as npz:
        x, y = npz["x"].copy(), npz["y"]
    x[2, 1] = np.nan
    np.savez(folder / "test.npz", x=x, y=y)
    result = cli("validate", path)
    line = " ".join(result.stderr.split())
    assert result.exit_code == 5 and "Traceback" not in result.stderr
    assert f"silo 'b': silo data {folder} (test) holds 1 non-finite values (NaN or inf) in x" in line
    assert "non-finite update values" not in line


def test_a_silo_whose_data_holds_nan_fails_naming_it_not_its_update(tmp_path: Path, linear_task: Path) -> None:
    from fedsilo.silo.agent import SiloAgent
    from fedsilo.wire.messages import Failure, FitIns

    folder = write_silo_folder(tmp_path / "b", 10)
    with np.load(folder / "train.npz") as npz:
        x, y = npz["x"].copy(), npz["y"]
    x[0, 0] = np.inf
    np.savez(folder / "train.npz", x=x, y=y)
    task = TaskModule.load(linear_task)
    agent = SiloAgent("b", lambda: task.make_client([folder], seed=0))
    reply = agent.fit(FitIns(1, task.initial_parameters(0)))
    assert isinstance(reply, Failure)
    assert f"silo data {folder} (train) holds 1 non-finite values (NaN or inf) in x" in reply.reason
