"""tracking/run_dir.py: the run folder a run writes and a resume reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def _rows_file(tmp_path: Path, rounds: tuple[int, ...]) -> RunDir:
    run = RunDir.create(tmp_path, "exp", "")
    for rnd in rounds:
        run.on_metrics(MetricRow(rnd, "silo", "fit", "a", {"loss": 0.5}))
    run.close()
    return run


def test_a_torn_last_line_is_cut_off_on_resume(tmp_path: Path) -> None:
    # what a crash (or a full disk) in the middle of a write leaves
    run = _rows_file(tmp_path, (0, 1, 2))
    with (run.path / "metrics.jsonl").open("a") as f:
        f.write('{"round": 3, "scope": "silo", "si')
    assert [r.round for r in run.metrics()] == [0, 1, 2]  # the report of a crashed run still reads it
    run.truncate_metrics(2)
    text = (run.path / "metrics.jsonl").read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 3
    run.on_metrics(MetricRow(3, "silo", "fit", "a"))
    run.close()
    assert [r.round for r in run.metrics()] == [0, 1, 2, 3]


def test_a_damaged_line_before_the_last_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    run = _rows_file(tmp_path, (0, 1, 2))
    path = run.path / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n")
    for read in (run.metrics, lambda: run.truncate_metrics(1)):
        with pytest.raises(RunDirError, match=r"metrics.jsonl, line 2, is not a metrics row") as info:
            read()
        assert "backup" in (info.value.fix or "")
    assert path.read_text().splitlines()[1] == lines[1]  # left as it was
    path.write_text("[1, 2]\n" + "\n".join(lines[2:]) + "\n")
    with pytest.raises(RunDirError, match="line 1"):
        run.metrics()


def test_a_write_cut_short_leaves_the_file_at_its_last_whole_line(tmp_path: Path) -> None:
    import errno

    from fedsilo.errors import DiskFull

    run = _rows_file(tmp_path, (0,))
    before = (run.path / "metrics.jsonl").read_bytes()

    class HalfThenFull:
        """An unbuffered file that takes 10 bytes, then reports the disk full."""

        def __init__(self, real: Any) -> None:
            self.real, self.calls = real, 0

        def write(self, data: Any) -> int:
            self.calls += 1
            if self.calls > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.real.write(bytes(data[:10]))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    run._metrics = HalfThenFull((run.path / "metrics.jsonl").open("ab", buffering=0))  # type: ignore[assignment]
    with pytest.raises(DiskFull, match="the disk is full: could not write .*metrics.jsonl"):
        run.on_metrics(MetricRow(1, "silo", "fit", "a"))
    run.close()  # nothing buffered is left to fail again
    assert (run.path / "metrics.jsonl").read_bytes() == before


def test_non_finite_values_are_written_as_null_never_as_bare_nan(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp", "")
    run.on_metrics(MetricRow(1, "server", "evaluate", None, {"loss": float("nan"), "x": np.float32("inf")}))
    run.close()
    line = (run.path / "metrics.jsonl").read_text()
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line)["loss"] is None and json.loads(line)["x"] is None
    run.write_summary({"final": {"loss": float("nan")}, "epsilon": float("inf")})
    text = (run.path / "summary.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "final": {"loss": None},
        "epsilon": None,
    }
