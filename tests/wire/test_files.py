"""wire/files.py: standard JSON only, whole files only, and a full disk as one clear error."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from fedsilo.errors import DiskFull
from fedsilo.server.checkpoint import load_checkpoint, save_checkpoint
from fedsilo.strategy.base import StrategyState
from fedsilo.wire.files import dumps, finite_or_none, mount_of, write_atomic


def test_dumps_refuses_nan_and_infinity_and_writes_numpy_values() -> None:
    assert json.loads(dumps({"a": np.float32(0.5), "n": np.int64(3), "p": Path("/x")})) == {
        "a": 0.5,
        "n": 3,
        "p": "/x",
    }
    for bad in (float("nan"), float("inf"), np.float64("-inf")):
        with pytest.raises(ValueError):
            dumps({"x": [1.0, bad]})


def test_finite_or_none_nulls_non_finite_values_on_purpose() -> None:
    value = {"a": float("nan"), "b": [1.0, np.float32("inf")], "c": {"d": np.float64(2.0)}, "e": "text"}
    assert finite_or_none(value) == {"a": None, "b": [1.0, None], "c": {"d": 2.0}, "e": "text"}


def _disk_fills_mid_write(monkeypatch: pytest.MonkeyPatch, code: int = errno.ENOSPC) -> None:
    real = Path.write_bytes

    def half(self: Path, data: bytes) -> int:
        real(self, data[: len(data) // 2])
        raise OSError(code, "no room")

    monkeypatch.setattr(Path, "write_bytes", half)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    path = write_atomic(tmp_path / "model.bin", b"old contents")
    _disk_fills_mid_write(monkeypatch, code)
    with pytest.raises(DiskFull) as info:
        write_atomic(path, b"new contents, longer")
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
    assert info.value.exit_code == 13
    assert f"could not write {path}" in info.value.message and str(mount_of(tmp_path)) in info.value.message
    disk = mount_of(tmp_path)
    expected = {errno.EFBIG: "file-size limit", errno.EDQUOT: "quota on"}.get(code, f"free space on {disk}")
    assert expected in (info.value.fix or "")


def test_other_write_errors_are_not_called_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _disk_fills_mid_write(monkeypatch, errno.EACCES)
    with pytest.raises(PermissionError):
        write_atomic(tmp_path / "x", b"data")
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_ones_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for rnd in (1, 2):
        save_checkpoint(tmp_path, rnd, {"w": np.full(1000, rnd, np.float32)}, StrategyState())
    _disk_fills_mid_write(monkeypatch)
    with pytest.raises(DiskFull, match="round_0003.safetensors"):
        save_checkpoint(tmp_path, 3, {"w": np.full(1000, 3, np.float32)}, StrategyState())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_0001.safetensors", "round_0002.safetensors"]
    assert load_checkpoint(tmp_path / "round_0002.safetensors").parameters["w"][0] == 2


def test_mount_of_finds_the_disk_of_a_path_not_yet_made(tmp_path: Path) -> None:
    assert mount_of(tmp_path / "not" / "yet") == mount_of(tmp_path)
    assert mount_of(Path("/")) == Path("/")
