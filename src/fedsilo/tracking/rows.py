"""The metric rows of a run, built in one place: what ``metrics.jsonl`` holds, one JSON object per line.

Every row names its ``round``, its ``scope`` (``server``: the global model on the server's data, or
the round itself; ``silo``: one silo's reply; ``federated``: the example-weighted summary of the
silos' evaluations) and its ``phase`` (``fit``, ``evaluate``, ``round``, ``secagg``). A failed
reply carries ``failure`` and ``failure_kind``; the other keys are measurements. The report, the
console, MLflow and the summary read rows through :class:`MetricRow`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedsilo.wire.messages import EvaluateRes, Failure, FitRes

Row = dict[str, Any]
#: Keys every row has or may have that are not measurements; a silo's metric never overwrites them.
FIELDS = ("round", "scope", "silo", "phase", "failure", "failure_kind", "time")


def reply_row(
    rnd: int, phase: str, reply: FitRes | EvaluateRes | Failure, extra: Mapping[str, Any] | None = None
) -> Row:
    """One silo's fit or evaluate reply (its metrics, examples, loss), or its failure."""
    row: Row = {"round": rnd, "scope": "silo", "silo": reply.silo, "phase": phase}
    if isinstance(reply, Failure):
        return {**row, "failure": reply.reason, "failure_kind": reply.kind, **dict(extra or {})}
    row["num_examples"] = reply.num_examples
    if isinstance(reply, EvaluateRes):
        row["loss"] = reply.loss
    own = {k: v for k, v in reply.metrics.items() if k not in FIELDS}
    return {**own, **row, **dict(extra or {})}


def round_row(rnd: int, updates: int, measured: Mapping[str, Any] | None = None) -> Row:
    """The round's own row: updates aggregated, bytes uploaded, privacy spent (phase ``round``)."""
    return {"round": rnd, "scope": "server", "silo": None, "phase": "round", "updates": updates, **dict(measured or {})}


def failed_round_row(rnd: int, reason: str) -> Row:
    """A round that produced no model (too few updates): the last good model is kept."""
    return {"round": rnd, "scope": "server", "silo": None, "phase": "round", "failure": reason}


def central_row(rnd: int, loss: float | None, metrics: Mapping[str, Any]) -> Row:
    """The global model scored on the server's own test data."""
    return {"round": rnd, "scope": "server", "silo": None, "phase": "evaluate", "loss": loss, **dict(metrics)}


def federated_row(rnd: int, summary: Mapping[str, Any]) -> Row:
    """The silos' evaluations of the global model, example-weighted, with the worst silo."""
    return {"round": rnd, "scope": "federated", "silo": None, "phase": "evaluate", **dict(summary)}


def secagg_row(rnd: int, silo: str, sent: int, received: int, failure: Failure | None, note: str = "") -> Row:
    """One silo's part in a secure-aggregation round: bytes each way, or where it dropped."""
    row: Row = {"round": rnd, "scope": "silo", "silo": silo, "phase": "secagg"}
    row["secagg_sent_bytes"] = sent
    row["secagg_received_bytes"] = received
    if failure is not None:
        row |= {"failure": f"{note}: {failure.reason}" if note else failure.reason, "failure_kind": failure.kind}
    return row


def failures_of(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if "failure" in r]
