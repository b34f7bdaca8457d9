"""The server's evaluation of a global model on server-side data (``server.data``).

A supervised task is scored by its own client on the server's test split (loss, accuracy, ...).
A task with server-side hooks (a generative model) is scored by its ``server_evaluate`` instead,
and its ``samples`` become a PNG grid in the run folder, named in the metrics row so the report
finds it. The same evaluator scores the baselines, so every model is judged the same way.
"""

from __future__ import annotations

from typing import Any

from fedsilo.arrays import ArrayDict
from fedsilo.client.base import Client
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.task import Task
from fedsilo.tracking.images import png_bytes, tile_grid
from fedsilo.tracking.run_dir import RunDir


class CentralEvaluator:
    """``evaluator(round, params, name)`` -> ``(loss or None, metrics)``; ``name`` names the sample grid."""

    def __init__(self, client: Client | None = None, hooks: Any = None, run: RunDir | None = None) -> None:
        self.client, self.hooks, self.run = client, hooks, run

    def __call__(self, round: int, params: ArrayDict, name: str | None = None) -> tuple[float | None, dict[str, Any]]:
        if self.client is not None:
            loss, n, scores = self.client.evaluate(params, {})
            return loss, {**scores, "num_examples": float(n)}
        metrics: dict[str, Any] = dict(self.hooks.evaluate(round, params))
        hook_loss = metrics.pop("loss", None)
        if self.hooks.has_samples and self.run is not None:
            rows = self.hooks.samples(params)
            png = png_bytes(tile_grid(rows))
            metrics["samples"] = self.run.write_samples(name or f"round_{round:04d}", png)
            metrics["sample_rows"] = ", ".join(rows)
        return hook_loss, metrics


def central_evaluator(config: ExperimentConfig, task: Task, run: RunDir | None = None) -> CentralEvaluator | None:
    """The evaluator for ``config``'s server-side data, or None when the experiment has none."""
    if config.server.data is None:
        return None
    hooks = task.server_hooks(config.server.data, config.seed, config.train.device)
    if hooks is not None:
        return CentralEvaluator(hooks=hooks, run=run)
    return CentralEvaluator(client=task.make_client([config.server.data], config.seed, config.train.device))
