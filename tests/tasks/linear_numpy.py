"""A NumPy task for tests: softmax regression, 4 features -> 2 classes.

Marker files in a silo's folder make that silo misbehave in ``train`` so that tests can drive the
failure paths with real components (read at call time, so a test can add or remove them):

- ``SLEEP_ONCE``: sleep for the seconds the file holds, deleting it first (only the first fit sleeps)
- ``DIE_ONCE``: delete it, then end the whole process at once (a worker dying mid-round)
- ``RAISE``: raise a RuntimeError
- ``NAN``: return a model with NaN weights
- ``NAN_ONCE``: delete it, then return a model with NaN weights (only the first fit)
- ``BAD_SHAPE``: return weights of the wrong shape
- ``HUGE``: return the model plus an unexpected 280 kB array (more than any transport lets a
  silo send over the model's size)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from fedsilo import TrainSettings, classification_metrics

FEATURES, CLASSES = 4, 2


class SiloData(tuple):
    """``(x, y)`` that also remembers which folder it came from (for the marker files)."""

    folder: Path | None = None


def model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "w": rng.normal(0.0, 0.1, size=(FEATURES, CLASSES)).astype(np.float32),
        "b": np.zeros(CLASSES, dtype=np.float32),
    }


def load_data(folder: Path, split: str) -> SiloData:
    with np.load(Path(folder) / f"{split}.npz", allow_pickle=False) as npz:
        x, y = npz["x"].astype(np.float32), npz["y"].astype(np.int64)
    data = SiloData((x, y))
    data.folder = Path(folder)
    return data


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _loss(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    p = _softmax(x.astype(np.float64) @ params["w"] + params["b"])
    return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))


def _misbehave(folder: Path | None) -> str | None:
    if folder is None:
        return None
    if (folder / "SLEEP_ONCE").exists():
        seconds = float((folder / "SLEEP_ONCE").read_text())
        (folder / "SLEEP_ONCE").unlink()
        time.sleep(seconds)
    if (folder / "DIE_ONCE").exists():
        (folder / "DIE_ONCE").unlink()
        os._exit(17)
    if (folder / "RAISE").exists():
        raise RuntimeError(f"training crashed in {folder.name}")
    if (folder / "NAN_ONCE").exists():
        (folder / "NAN_ONCE").unlink()
        return "NAN"
    for marker in ("NAN", "BAD_SHAPE", "HUGE"):
        if (folder / marker).exists():
            return marker
    return None


def train(
    params: dict[str, np.ndarray], data: SiloData, settings: TrainSettings, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    mode = _misbehave(getattr(data, "folder", None))
    x, y = data
    w, b = params["w"].astype(np.float64), params["b"].astype(np.float64)
    for _ in range(settings.epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            p = _softmax(x[idx] @ w + b)
            p[np.arange(len(idx)), y[idx]] -= 1.0
            w -= settings.lr * (x[idx].T @ p) / len(idx)
            b -= settings.lr * p.mean(axis=0)
    new = {"w": w.astype(np.float32), "b": b.astype(np.float32)}
    if mode == "NAN":
        new["w"][0, 0] = np.nan
    metrics = {"train_loss": _loss(new, x, y)}  # before the shape is spoilt: the task itself does not fail
    if mode == "BAD_SHAPE":
        new["w"] = np.zeros((FEATURES + 1, CLASSES), dtype=np.float32)
    elif mode == "HUGE":
        new["padding"] = np.zeros(70_000, dtype=np.float32)
    return new, metrics


def evaluate(params: dict[str, np.ndarray], data: SiloData) -> tuple[float, dict[str, float]]:
    x, y = data
    pred = np.argmax(x @ params["w"] + params["b"], axis=1)
    return _loss(params, x, y), classification_metrics(y, pred)
