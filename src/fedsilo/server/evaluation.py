"""How the server judges a global model: on its own test data, and over the silos' evaluations.

:class:`CentralEvaluator` scores a model on ``server.data``: a supervised task through its own
client (loss, accuracy, ...), a task with server-side hooks (a generative model) through them,
its ``samples`` becoming a PNG grid in the run folder that the metrics row names, so the report
finds it. The same evaluator scores the baselines, so every model is judged the same way.
:func:`federated_summary` folds the silos' evaluations into one example-weighted row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from fedsilo.client.base import Client
from fedsilo.tracking.images import png_bytes, tile_grid
from fedsilo.tracking.run_dir import RunDir
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import EvaluateInstructions
from fedsilo.wire.messages import EvaluateRes


class ServerHooks(Protocol):
    """A task's server-side hooks over a framework's model (the PyTorch glue implements it)."""

    @property
    def has_samples(self) -> bool: ...

    def evaluate(self, round: int, parameters: ArrayDict) -> dict[str, float]: ...

    def samples(self, parameters: ArrayDict) -> dict[str, np.ndarray]: ...


class CentralEvaluator:
    """``evaluator(round, params, name)`` -> ``(loss or None, metrics)``; ``name`` names the sample grid."""

    def __init__(
        self, client: Client | None = None, hooks: ServerHooks | None = None, run: RunDir | None = None
    ) -> None:
        self.client, self.hooks, self.run = client, hooks, run

    def __call__(self, round: int, params: ArrayDict, name: str | None = None) -> tuple[float | None, dict[str, Any]]:
        if self.client is not None:
            loss, n, scores = self.client.evaluate(params, EvaluateInstructions())
            return loss, {**scores, "num_examples": float(n)}
        assert self.hooks is not None
        metrics: dict[str, Any] = dict(self.hooks.evaluate(round, params))
        hook_loss = metrics.pop("loss", None)
        if self.hooks.has_samples and self.run is not None:
            rows = self.hooks.samples(params)
            png = png_bytes(tile_grid(rows))
            metrics["samples"] = self.run.write_samples(name or f"round_{round:04d}", png)
            metrics["sample_rows"] = ", ".join(rows)
        return hook_loss, metrics


def federated_summary(results: Sequence[EvaluateRes]) -> dict[str, Any]:
    """Example-weighted means over silos, plus the worst silo: a model that fails one hospital fails."""
    total = sum(r.num_examples for r in results)
    summary: dict[str, Any] = {"loss": sum(r.loss * r.num_examples for r in results) / total, "num_examples": total}
    keys = set.intersection(*(set(r.metrics) for r in results))
    for key in sorted(keys):
        summary[key] = sum(r.metrics[key] * r.num_examples for r in results) / total
    if "accuracy" in keys:
        worst = min(results, key=lambda r: r.metrics["accuracy"])
        summary["worst_accuracy"] = worst.metrics["accuracy"]
        summary["worst_silo"] = worst.silo
    if "balanced_accuracy" in keys:  # on skewed silos the worst by accuracy can hide the worst by balance
        worst = min(results, key=lambda r: r.metrics["balanced_accuracy"])
        summary["worst_balanced_accuracy"] = worst.metrics["balanced_accuracy"]
        summary["worst_balanced_silo"] = worst.silo
    return summary
