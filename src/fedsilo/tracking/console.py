"""Progress on the terminal: one line per silo reply, one summary line per round."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from fedsilo.tracking.rows import MetricRow
from fedsilo.wire.messages import EvaluateRes, Failure, FitRes

NAMED_SILOS = 10  # a round's silos named on its first line; 100 sampled silos are counted, not listed


def _fmt(metrics: Mapping[str, Any], keys: Sequence[str]) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), float | int))


def _server_keys(row: MetricRow, keys: Sequence[str]) -> list[str]:
    """The usual metrics of a classifier, or (a task's own ``server_evaluate``) loss and its numbers."""
    if "accuracy" in row.values:
        return list(keys)
    own = sorted(k for k in row.values if k not in ("loss", "num_examples") and row.number(k) is not None)
    return ["loss", *own]


class ConsoleProgress:
    def __init__(self, rounds: int, console: Console | None = None, verbose: bool = True) -> None:
        self.rounds = rounds
        self.console = console or Console(stderr=True, highlight=False)
        self.verbose = verbose
        self._started = time.monotonic()
        self._round_started = self._started

    def on_round_start(self, round: int, silos: Sequence[str]) -> None:
        self._round_started = time.monotonic()
        names = ", ".join(silos[:NAMED_SILOS]) + (
            f" and {len(silos) - NAMED_SILOS} more" if len(silos) > NAMED_SILOS else ""
        )
        self.console.print(f"[bold]round {round}/{self.rounds}[/bold]  training on {len(silos)} silos: {names}")

    def on_reply(self, round: int, phase: str, reply: FitRes | EvaluateRes | Failure) -> None:
        if isinstance(reply, Failure):
            self.console.print(f"  [red]{reply.silo:<16} {phase:<8} FAILED ({reply.kind})[/red] {escape(reply.reason)}")
        elif self.verbose:
            metrics: dict[str, Any] = dict(reply.metrics)
            if isinstance(reply, EvaluateRes):
                metrics["loss"] = reply.loss
            keys = ["train_loss"] if phase == "fit" else ["loss", "accuracy", "balanced_accuracy"]
            self.console.print(f"  {reply.silo:<16} {phase:<8} {reply.num_examples:>6} examples  {_fmt(metrics, keys)}")

    def on_metrics(self, row: MetricRow) -> None:
        pass

    def on_round_end(self, round: int, rows: Sequence[MetricRow]) -> None:
        keys = ["loss", "accuracy", "balanced_accuracy"]
        failed = [row for row in rows if row.scope == "server" and row.failed]
        if failed:
            self.console.print(
                f"  [red]round {round} failed; keeping the last good model[/red] {escape(str(failed[0].failure))}"
            )
            return
        parts = []
        for row in rows:
            if row.scope == "server" and row.phase == "round":
                parts.extend(_spent(row))
            elif row.scope == "server":
                parts.append(f"server test: {_fmt(row.values, _server_keys(row, keys))}")
            elif row.scope == "federated":
                worst = row.get("worst_silo")
                low = row.number("worst_accuracy")
                at = f"  worst {worst} {low:.4f}" if worst is not None and low is not None else ""
                parts.append(f"silos' tests: {_fmt(row.values, keys)}{at}")
        elapsed = time.monotonic() - self._round_started
        label = "initial model" if round == 0 else f"round {round} done in {elapsed:.1f}s"
        self.console.print(f"  [green]{label}[/green]  " + " | ".join(parts))


def _spent(row: MetricRow) -> list[str]:
    """Epsilon so far (central DP) and the round's upload against float32, when they say something."""
    parts = []
    epsilon, delta = row.number("epsilon"), row.number("delta")
    if epsilon is not None:
        parts.append(f"epsilon {epsilon:.3f} (delta {delta:g})")
    sent, raw = row.get("upload_bytes"), row.get("upload_bytes_raw")
    if isinstance(sent, int) and isinstance(raw, int) and raw > 0 and sent != raw:
        parts.append(f"uploaded {sent:,} bytes ({sent / raw:.3f} of float32)")
    return parts
