"""The run folder: everything a run produced, enough to audit it and to resume it.

Layout: ``experiment.yaml`` (the file as given), ``config.json`` (resolved, absolute paths),
``metrics.jsonl`` (one JSON object per line), ``checkpoints/round_NNNN.safetensors``,
``model.safetensors``, ``summary.json`` and, for a task with a ``samples`` hook,
``samples/<name>.png`` (grids of generated images). Lines are written whole as they come, so a crash
loses at most the round in flight; a line cut short by a crash (or a full disk) is the last one,
and a resume cuts it off (:meth:`RunDir.truncate_metrics`). Every other file is replaced atomically.
All JSON is standard JSON (:mod:`fedsilo.wire.files`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from fedsilo.errors import RunDirError
from fedsilo.tracking.rows import MetricRow
from fedsilo.wire.arrays import ArrayDict, save_file
from fedsilo.wire.files import append_whole, dumps, finite_or_none, write_atomic, writing
from fedsilo.wire.messages import EvaluateRes, Failure, FitRes

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
MODEL = "model.safetensors"
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / CHECKPOINTS
        self._metrics: BinaryIO | None = None

    @classmethod
    def create(cls, root: Path, name: str, source_text: str) -> RunDir:
        """A new, uniquely named folder under ``root``; never reuses an existing one."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            path = Path(root) / (f"{name}-{stamp}" + (f"-{i}" if i else ""))
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                continue
        else:
            raise RunDirError(
                f"could not create a new run folder under {root}", "remove old run folders there, or pass --out"
            )
        run = cls(path)
        run.checkpoints.mkdir()
        write_atomic(path / "experiment.yaml", source_text)
        return run

    def write_config(self, config: Mapping[str, Any]) -> None:
        """The resolved config (absolute paths): what ``--resume`` starts from (replaced whole)."""
        write_atomic(self.path / CONFIG, dumps(config, indent=2))

    @classmethod
    def open(cls, path: Path) -> RunDir:
        run = cls(path)
        if not (run.path / CONFIG).is_file():
            raise RunDirError(
                f"{path} is not a fedsilo run folder (no {CONFIG})", "pass the folder `fedsilo run` printed"
            )
        return run

    def config(self) -> dict[str, Any]:
        return json.loads((self.path / CONFIG).read_text())

    def truncate_metrics(self, last_round: int) -> None:
        """Drop rows of rounds after ``last_round`` (a round cut off by a crash is re-run on resume).

        A torn last line (a crash or a full disk mid-write) is dropped too; a damaged line before
        it is an error naming the file and the line, and the file is left as it is.
        """
        path = self.path / METRICS
        if not path.exists():
            return
        keep = [line for line, row in self._lines() if row.round <= last_round]
        write_atomic(path, "".join(line + "\n" for line in keep))

    def metrics(self) -> list[MetricRow]:
        """The rows written so far, typed; a torn last line (the round in flight at a crash) is left out."""
        return [row for _, row in self._lines()]

    def _lines(self) -> list[tuple[str, MetricRow]]:
        path = self.path / METRICS
        if not path.exists():
            return []
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        torn = lines.pop()  # after the last newline: empty, unless the last write was cut short
        out = []
        for number, line in enumerate(lines, 1):
            if line.strip():
                out.append((line, _row(path, number, line)))
        # half a line: the round it belongs to was cut off, and is re-run on resume
        with contextlib.suppress(ValueError):
            if torn.strip():
                out.append((torn, MetricRow.from_json(json.loads(torn))))
        return out

    # Observer interface -------------------------------------------------------------
    def on_round_start(self, round: int, silos: Sequence[str]) -> None:
        pass

    def on_reply(self, round: int, phase: str, reply: FitRes | EvaluateRes | Failure) -> None:
        pass

    def on_metrics(self, row: MetricRow) -> None:
        line = dumps(row.at(round(time.time(), 3)).to_json()) + "\n"
        with writing(self.path / METRICS):
            if self._metrics is None:
                self._metrics = (self.path / METRICS).open("ab", buffering=0)
            append_whole(self._metrics, line.encode())

    def on_round_end(self, round: int, rows: Sequence[MetricRow]) -> None:
        pass

    # Results ------------------------------------------------------------------------
    def write_model(self, params: ArrayDict, metadata: Mapping[str, str] | None = None) -> Path:
        path = self.path / MODEL
        save_file(params, path, metadata)
        return path

    def write_samples(self, name: str, png: bytes) -> str:
        """Save a sample grid as ``samples/<name>.png``; returns its path relative to the run folder."""
        folder = self.path / SAMPLES
        with writing(folder):
            folder.mkdir(exist_ok=True)
        write_atomic(folder / f"{name}.png", png)
        return f"{SAMPLES}/{name}.png"

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """``summary.json``; a value that is not finite (a diverged loss) is written as null."""
        return write_atomic(self.path / SUMMARY, dumps(finite_or_none(dict(summary)), indent=2))

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


def _row(path: Path, number: int, line: str) -> MetricRow:
    try:
        return MetricRow.from_json(json.loads(line))
    except ValueError as exc:
        raise RunDirError(
            f"{path}, line {number}, is not a metrics row: {exc}",
            "restore the file from a backup (or delete that line, losing its row)",
        ) from None
