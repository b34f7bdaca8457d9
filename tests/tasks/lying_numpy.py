"""A NumPy task whose silos may lie (marker files in the silo's folder).

Self-contained (a deployed silo gets this one file). Softmax regression, 4 features -> 2 classes.

- ``RAISE_TEXT``: training raises a RuntimeError whose message is the file's text (escapes and all)
- ``EVAL_LOSS``: the evaluation's loss is the float the file holds (``nan``, ``inf``)
- ``EVAL_METRICS``: a JSON object of metrics sent beside the real ones (``{"failure": 1}``)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo import TrainSettings


def model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"w": rng.normal(0.0, 0.1, size=(4, 2)).astype(np.float32), "b": np.zeros(2, np.float32)}


def load_data(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, Path]:
    with np.load(Path(folder) / f"{split}.npz", allow_pickle=False) as npz:
        return npz["x"].astype(np.float32), npz["y"].astype(np.int64), Path(folder)


def _probabilities(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) @ params["w"] + params["b"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def train(params: dict[str, np.ndarray], data: Any, settings: TrainSettings, rng: np.random.Generator) -> Any:
    x, y, folder = data
    if (folder / "RAISE_TEXT").exists():
        raise RuntimeError((folder / "RAISE_TEXT").read_text())
    p = _probabilities(params, x)
    p[np.arange(len(y)), y] -= 1.0
    w = params["w"] - settings.lr * (x.T @ p) / len(y)
    b = params["b"] - settings.lr * p.mean(axis=0)
    return {"w": w.astype(np.float32), "b": b.astype(np.float32)}, {}


def evaluate(params: dict[str, np.ndarray], data: Any) -> tuple[float, dict[str, Any]]:
    x, y, folder = data
    p = _probabilities(params, x)
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    metrics = {"accuracy": float(np.mean(p.argmax(axis=1) == y))}
    if (folder / "EVAL_LOSS").exists():
        loss = float((folder / "EVAL_LOSS").read_text())
    if (folder / "EVAL_METRICS").exists():
        metrics = {**metrics, **json.loads((folder / "EVAL_METRICS").read_text())}
    return loss, metrics
