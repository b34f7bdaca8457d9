"""experiment/task.py: loading the user's task module and building clients from it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fedsilo.client.numpy import NumpyClient
from fedsilo.errors import DataError, TaskError
from fedsilo.silo.task import NUMPY, TORCH, TaskModule, import_task_module
from fedsilo.wire.instructions import EvaluateInstructions, TrainSettings


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_linear_task_loads_and_is_seeded(linear_task: Path) -> None:
    task = TaskModule.load(linear_task)
    first, again, other = task.initial_parameters(1), task.initial_parameters(1), task.initial_parameters(2)
    assert task.framework_of(task.build_model(1)) == NUMPY
    assert list(first) == ["w", "b"] and first["w"].shape == (4, 2)
    np.testing.assert_array_equal(first["w"], again["w"])
    assert not np.array_equal(first["w"], other["w"])


def test_the_torch_task_is_recognised(torch_task: Path) -> None:
    task = TaskModule.load(torch_task)
    assert task.framework_of(task.build_model(0)) == TORCH
    a, b = task.initial_parameters(3), task.initial_parameters(3)
    np.testing.assert_array_equal(a["weight"], b["weight"])  # torch is seeded too


def test_a_missing_task_module(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="does not exist") as info:
        TaskModule.load(tmp_path / "nope.py")
    assert info.value.exit_code == 3


def test_a_task_that_raises_on_import(tmp_path: Path) -> None:
    path = write(tmp_path / "task.py", "import numpy\nraise RuntimeError('no GPU driver here')\n")
    with pytest.raises(TaskError) as info:
        TaskModule.load(path)
    assert "failed to import: RuntimeError: no GPU driver here" in info.value.message
    assert str(path) in info.value.message


def test_a_task_with_a_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="SyntaxError"):
        TaskModule.load(write(tmp_path / "task.py", "def model(:\n"))


def test_a_task_without_model(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"defines no model\(\) function"):
        TaskModule.load(write(tmp_path / "task.py", "x = 1\n"))


def test_a_model_of_an_unknown_kind(tmp_path: Path) -> None:
    task = TaskModule.load(write(tmp_path / "task.py", "def model():\n    return [1, 2]\n"))
    with pytest.raises(TaskError, match="returned list"):
        task.build_model(0)


def test_a_numpy_task_needs_train_and_evaluate(tmp_path: Path) -> None:
    path = write(
        tmp_path / "task.py",
        "import numpy as np\ndef model():\n    return {'w': np.zeros(2)}\ndef train(p, d, s, r):\n    return p, {}\n",
    )
    with pytest.raises(TaskError, match=r"defines no evaluate\(\) function"):
        TaskModule.load(path).make_client([tmp_path], seed=0)


def test_a_task_may_import_helpers_beside_it_and_sys_path_is_restored(tmp_path: Path) -> None:
    write(tmp_path / "helpers_for_task_test.py", "SIZE = 3\n")
    path = write(
        tmp_path / "task.py",
        "import numpy as np\nfrom helpers_for_task_test import SIZE\ndef model():\n    return {'w': np.zeros(SIZE)}\n",
    )
    before = list(sys.path)
    assert TaskModule.load(path).initial_parameters(0)["w"].shape == (3,)
    assert sys.path == before
    assert import_task_module(path) is import_task_module(path)  # imported once


def test_make_client_reads_the_silo_and_missing_folders_are_data_errors(
    tmp_path: Path, linear_task: Path, write_silo
) -> None:
    task = TaskModule.load(linear_task)
    folder = write_silo(tmp_path / "a", n_train=9, n_test=4)
    client = task.make_client([folder], seed=0)
    assert isinstance(client, NumpyClient)
    _, n, metrics = client.fit(task.initial_parameters(0), TrainSettings(seed=1))
    assert n == 9 and "train_loss" in metrics
    assert client.evaluate(task.initial_parameters(0), EvaluateInstructions())[1] == 4
    with pytest.raises(DataError, match="does not exist"):
        task.load_data([tmp_path / "missing"], "train")


def test_pooled_data_concatenates_silos(tmp_path: Path, linear_task: Path, write_silo) -> None:
    task = TaskModule.load(linear_task)
    a = write_silo(tmp_path / "a", n_train=5, seed=1)
    b = write_silo(tmp_path / "b", n_train=7, seed=2)
    x, y = task.load_data([a, b], "train")
    assert len(x) == len(y) == 12
