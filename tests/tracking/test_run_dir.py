"""tracking/run_dir.py: the run folder a run writes and a resume reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsilo.errors import RunDirError
from fedsilo.tracking.rows import MetricRow
from fedsilo.tracking.run_dir import RunDir
from fedsilo.wire.arrays import load_file, read_metadata


def test_create_makes_a_fresh_folder_each_time(tmp_path: Path) -> None:
    first = RunDir.create(tmp_path / "runs", "exp", "name: exp\n")
    second = RunDir.create(tmp_path / "runs", "exp", "name: exp\n")  # same second, same name
    assert first.path != second.path
    for run in (first, second):
        assert run.path.name.startswith("exp-")
        assert (run.path / "experiment.yaml").read_text() == "name: exp\n"
        assert run.checkpoints.is_dir()


def test_open_needs_a_config(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a fedsilo run folder") as info:
        RunDir.open(tmp_path)
    assert info.value.exit_code == 8
    run = RunDir.create(tmp_path, "exp", "")
    run.write_config({"rounds": 3, "path": Path("/x")})
    assert RunDir.open(run.path).config() == {"rounds": 3, "path": "/x"}


def test_metrics_rows_are_appended_with_a_time_and_numpy_values(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp", "")
    run.on_metrics(MetricRow(0, "server", "evaluate", None, {"loss": np.float32(0.5)}))  # type: ignore[dict-item]
    run.on_metrics(MetricRow(1, "silo", "fit", "a", {"num_examples": np.int64(3)}))  # type: ignore[dict-item]
    run.close()
    rows = run.metrics()
    assert [r.round for r in rows] == [0, 1]
    assert rows[0].get("loss") == 0.5 and rows[1].get("num_examples") == 3
    assert all(isinstance(r.time, float) for r in rows)
    assert len((run.path / "metrics.jsonl").read_text().splitlines()) == 2


def test_truncate_metrics_drops_later_rounds(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp", "")
    for rnd in (0, 1, 1, 2, 3, 3):
        run.on_metrics(MetricRow(rnd, "silo", "fit", "a"))
    run.close()
    run.truncate_metrics(1)
    assert [r.round for r in run.metrics()] == [0, 1, 1]
    run.on_metrics(MetricRow(2, "silo", "fit", "a"))  # appending goes on after it
    run.close()
    assert [r.round for r in run.metrics()] == [0, 1, 1, 2]


def test_truncate_without_metrics_is_fine(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp", "")
    run.truncate_metrics(3)
    assert run.metrics() == []


def test_model_and_summary_are_written_atomically(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp", "")
    run.write_model({"w": np.arange(3, dtype=np.float32)}, {"rounds": "2"})
    run.write_summary({"final": {"accuracy": np.float64(0.75)}, "rounds": 2})
    np.testing.assert_array_equal(load_file(run.path / "model.safetensors")["w"], [0, 1, 2])
    assert read_metadata(run.path / "model.safetensors") == {"rounds": "2"}
    assert json.loads((run.path / "summary.json").read_text()) == {"final": {"accuracy": 0.75}, "rounds": 2}
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]
