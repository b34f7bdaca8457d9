"""The run folder: everything a run produced, enough to audit it and to resume it.

Layout: ``experiment.yaml`` (the file as given), ``config.json`` (resolved, absolute paths),
``metrics.jsonl`` (one JSON object per line), ``checkpoints/round_NNNN.safetensors``,
``model.safetensors``, ``summary.json`` and, for a task with a ``samples`` hook,
``samples/<name>.png`` (grids of generated images). Lines are flushed as written, so a crash loses at
most the round in flight.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from fedsilo.errors import RunDirError
from fedsilo.tracking.rows import MetricRow
from fedsilo.wire.arrays import ArrayDict, save_file
from fedsilo.wire.messages import EvaluateRes, Failure, FitRes

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
MODEL = "model.safetensors"
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / CHECKPOINTS
        self._metrics: TextIO | None = None

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
        (path / "experiment.yaml").write_text(source_text)
        return run

    def write_config(self, config: Mapping[str, Any]) -> None:
        """The resolved config (absolute paths): what ``--resume`` starts from."""
        (self.path / CONFIG).write_text(json.dumps(config, indent=2, default=_json_default))

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
        """Drop rows of rounds after ``last_round`` (a round cut off by a crash is re-run on resume)."""
        path = self.path / METRICS
        if not path.exists():
            return
        keep = [
            line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["round"] <= last_round
        ]
        path.write_text("".join(line + "\n" for line in keep))

    def metrics(self) -> list[MetricRow]:
        """The rows written so far, typed (a line that is not a row is an error naming the folder)."""
        path = self.path / METRICS
        if not path.exists():
            return []
        try:
            return [MetricRow.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        except ValueError as exc:
            raise RunDirError(
                f"{path} holds a line that is not a metrics row: {exc}", "restore it from a backup"
            ) from None

    # Observer interface -------------------------------------------------------------
    def on_round_start(self, round: int, silos: Sequence[str]) -> None:
        pass

    def on_reply(self, round: int, phase: str, reply: FitRes | EvaluateRes | Failure) -> None:
        pass

    def on_metrics(self, row: MetricRow) -> None:
        if self._metrics is None:
            self._metrics = (self.path / METRICS).open("a")
        line = json.dumps(row.at(round(time.time(), 3)).to_json(), default=_json_default)
        self._metrics.write(line + "\n")
        self._metrics.flush()

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
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.png").write_bytes(png)
        return f"{SAMPLES}/{name}.png"

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        path = self.path / SUMMARY
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=_json_default))
        tmp.replace(path)
        return path

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
