"""The metric rows of a run: typed, built in one place, one JSON object per line of ``metrics.jsonl``.

Every row names its ``round``, its ``scope`` (``server``: the global model on the server's data, or
the round itself; ``silo``: one silo's reply; ``federated``: the example-weighted summary of the
silos' evaluations) and its ``phase`` (``fit``, ``evaluate``, ``round``, ``secagg``). A failed
reply carries ``failure`` and ``failure_kind``; everything else is a measurement in ``values``
(losses, metrics, example counts, bytes, epsilon). The server loop builds rows with the functions
below; the run folder, the console, MLflow, the report and the summary read them as
:class:`MetricRow`. On disk a row is flat (``{"round": 1, "scope": "silo", ..., "accuracy": 0.9}``):
a measurement named like a field is dropped, so no silo can overwrite what a row says it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from fedsilo.wire.files import finite_or_none
from fedsilo.wire.messages import EvaluateRes, Failure, FailureKind, FitRes

Scope = Literal["server", "silo", "federated"]
Phase = Literal["fit", "evaluate", "round", "secagg"]
Value = float | int | str | None
#: The keys a row has besides its measurements.
FIELDS = ("round", "scope", "silo", "phase", "failure", "failure_kind", "time")
#: What the server itself writes beside a silo's metrics: a reply's count and loss, its bytes, and
#: (prefix) the federated row's worst silo. A silo's metric may not take one of these names.
SERVER_MEASURES = ("num_examples", "loss", "upload_bytes", "upload_bytes_raw")
SERVER_PREFIX = "worst_"


def reserved(name: str) -> bool:
    """Whether a silo's metric called ``name`` would collide with a row's own field or measure."""
    return name in FIELDS or name in SERVER_MEASURES or name.startswith(SERVER_PREFIX)


@dataclass(frozen=True, slots=True)
class MetricRow:
    round: int
    scope: Scope
    phase: Phase
    silo: str | None = None
    values: Mapping[str, Value] = field(default_factory=dict)
    failure: str | None = None
    failure_kind: FailureKind | None = None
    time: float | None = None

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def get(self, key: str, default: Value = None) -> Value:
        """A measurement (``loss``, ``accuracy``, ``upload_bytes``, ...), or ``default``."""
        return self.values.get(key, default)

    def number(self, key: str) -> float | None:
        """A measurement as a finite float, or None (absent, text, NaN)."""
        value = self.values.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        return float(value)

    def at(self, time: float) -> MetricRow:
        return replace(self, time=time)

    def to_json(self) -> dict[str, Any]:
        """The flat object ``metrics.jsonl`` holds (absent failure and time left out).

        A measurement that is not finite (the server's own loss of a diverged model) is null:
        JSON has no NaN. A silo's reply never holds one: the server rejects it on receipt.
        """
        out: dict[str, Any] = {"round": self.round, "scope": self.scope, "silo": self.silo, "phase": self.phase}
        out.update(finite_or_none(dict(self.values)))
        if self.failure is not None:
            out["failure"] = self.failure
        if self.failure_kind is not None:
            out["failure_kind"] = self.failure_kind
        if self.time is not None:
            out["time"] = self.time
        return out

    @classmethod
    def from_json(cls, data: Any) -> MetricRow:
        if not isinstance(data, Mapping):
            raise ValueError(f"not a metrics row: {data!r:.200}")
        scope, phase = data.get("scope"), data.get("phase")
        if scope not in get_args(Scope) or phase not in get_args(Phase) or not isinstance(data.get("round"), int):
            raise ValueError(f"not a metrics row: {dict(data)!r:.200}")
        return cls(
            data["round"],
            scope,  # type: ignore[arg-type]  # checked against the Literal just above
            phase,  # type: ignore[arg-type]
            data.get("silo"),
            {k: v for k, v in data.items() if k not in FIELDS},
            data.get("failure"),
            data.get("failure_kind"),
            data.get("time"),
        )


def _measures(values: Mapping[str, Any]) -> dict[str, Value]:
    return {k: v for k, v in values.items() if k not in FIELDS}


def reply_row(
    rnd: int, phase: Phase, reply: FitRes | EvaluateRes | Failure, extra: Mapping[str, Any] | None = None
) -> MetricRow:
    """One silo's fit or evaluate reply (its metrics, examples, loss), or its failure."""
    if isinstance(reply, Failure):
        return MetricRow(rnd, "silo", phase, reply.silo, _measures(extra or {}), reply.reason, reply.kind)
    values: dict[str, Value] = {**_measures(reply.metrics), "num_examples": reply.num_examples}
    if isinstance(reply, EvaluateRes):
        values["loss"] = reply.loss
    return MetricRow(rnd, "silo", phase, reply.silo, {**values, **_measures(extra or {})})


def round_row(rnd: int, updates: int, measured: Mapping[str, Any] | None = None) -> MetricRow:
    """The round's own row: updates aggregated, bytes uploaded, privacy spent (phase ``round``)."""
    return MetricRow(rnd, "server", "round", None, {"updates": updates, **_measures(measured or {})})


def failed_round_row(rnd: int, reason: str) -> MetricRow:
    """A round that produced no model (too few updates): the last good model is kept."""
    return MetricRow(rnd, "server", "round", None, {}, reason)


def central_row(rnd: int, loss: float | None, metrics: Mapping[str, Any]) -> MetricRow:
    """The global model scored on the server's own test data."""
    return MetricRow(rnd, "server", "evaluate", None, {"loss": loss, **_measures(metrics)})


def federated_row(rnd: int, summary: Mapping[str, Any]) -> MetricRow:
    """The silos' evaluations of the global model, example-weighted, with the worst silo."""
    return MetricRow(rnd, "federated", "evaluate", None, _measures(summary))


def secagg_row(rnd: int, silo: str, sent: int, received: int, failure: Failure | None, note: str = "") -> MetricRow:
    """One silo's part in a secure-aggregation round: bytes each way, or where it dropped."""
    values: dict[str, Value] = {"secagg_sent_bytes": sent, "secagg_received_bytes": received}
    if failure is None:
        return MetricRow(rnd, "silo", "secagg", silo, values)
    reason = f"{note}: {failure.reason}" if note else failure.reason
    return MetricRow(rnd, "silo", "secagg", silo, values, reason, failure.kind)
