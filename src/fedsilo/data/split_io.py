"""What every ``fedsilo data split`` method shares: the report, byte-stable files, atomic writes.

A split is never half-written: its files go to a hidden folder beside ``out`` that is renamed
into place, and an existing split made with other parameters is only replaced on ``force``. The
same arrays and rows always give the same bytes (fixed zip timestamps, ``\\n`` line ends), so a
re-run with the same settings is byte-identical.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.errors import DataError
from fedsilo.wire.files import dumps

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class SplitReport:
    """What a split produced; ``params`` is what makes two splits the same split."""

    out: Path
    method: str
    seed: int
    silos: list[dict[str, Any]]
    server_test: int
    source: str
    source_sha256: str
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    already_existed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}

    def to_json(self) -> str:
        return dumps(self.to_dict(), indent=2)


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but with fixed zip timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def save_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain CSV with ``\\n`` line ends (whatever the platform), quoting only where needed."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def existing_split(out: Path, params: dict[str, Any], force: bool) -> SplitReport | None:
    """The report already at ``out`` if it is this very split; an error if replacing would
    lose something the caller did not ask to replace."""
    if not out.exists() or force:
        return None
    if not out.is_dir():
        raise DataError(f"{out} exists and is not a folder", fix="choose another output folder")
    manifest = out / "split.json"
    if manifest.is_file():
        try:
            saved = json.loads(manifest.read_text())
            report = SplitReport(**{**saved, "out": out, "already_existed": True})
        except (ValueError, TypeError) as exc:
            raise DataError(f"{manifest} is unreadable: {exc}", fix="pass --force") from exc
        if report.params == params:
            return report
        raise DataError(
            f"{out} already holds a split made with other parameters or data",
            fix="choose another output folder, or pass --force to rewrite it",
        )
    if any(out.iterdir()):
        raise DataError(
            f"{out} is not empty and holds no split.json",
            fix="choose an empty output folder, or pass --force to replace its contents",
        )
    return None


def _scratch_dir(out: Path, kind: str) -> Path:
    """A fresh hidden folder beside ``out`` (same filesystem, so renames are atomic); unlike
    ``mkdtemp`` it honours the umask, so the final folder gets normal permissions."""
    path = out.parent / f".{out.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def _move_into_place(tmp: Path, out: Path) -> None:
    """Swap ``tmp`` in as ``out``; the old ``out`` is removed only once the new one is there."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _scratch_dir(out, "old")
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / out.name, out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def commit_split(report: SplitReport, write: Callable[[Path], None]) -> None:
    """Run ``write(folder)`` into a scratch folder, add ``split.json`` and move it to ``report.out``."""
    out = report.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch_dir(out, "tmp")
    try:
        write(tmp)
        saved = {k: v for k, v in report.to_dict().items() if k not in ("out", "already_existed")}
        (tmp / "split.json").write_text(dumps(saved, indent=2) + "\n")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
