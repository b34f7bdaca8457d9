"""Gathering a round's updates: one protocol per gatherer, behind one small interface.

The loop opens the strategy's aggregation, asks its gatherer for the round's updates and then
finishes the aggregation; it never branches on how the updates came. :class:`PlainGatherer`
receives each silo's (possibly encoded) model, checks it and folds it in as it arrives;
:class:`~fedsilo.server.secure_gather.SecureGatherer` runs secure aggregation and folds in one
pre-averaged update. Each reports every reply through the round's :class:`RoundLog`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from fedsilo.errors import RoundFailed
from fedsilo.server.uplink import receive_fit
from fedsilo.strategy.base import Aggregation
from fedsilo.tracking.rows import MetricRow, Phase, reply_row
from fedsilo.transport.base import Transport
from fedsilo.wire.arrays import ArrayDict, spec_of
from fedsilo.wire.instructions import FitInstructions
from fedsilo.wire.messages import EvaluateRes, Failure, FitIns, FitRes
from fedsilo.wire.text import printable


@dataclass
class RoundLog:
    """The rows of one round as they happen, each passed on to the observers at once.

    Every reply passes here, so this is where a silo's words are made :func:`printable` (once,
    before any console, log, report or MLflow sees them): failure reasons, and the names and text
    of a row's measurements.
    """

    emit: Callable[[MetricRow], None]
    on_reply: Callable[[str, FitRes | EvaluateRes | Failure], None]
    rows: list[MetricRow] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def row(self, row: MetricRow) -> MetricRow:
        row = _printable_row(row)
        self.rows.append(row)
        self.emit(row)
        return row

    def reply(
        self, rnd: int, phase: Phase, reply: FitRes | EvaluateRes | Failure, extra: dict[str, Any] | None = None
    ) -> None:
        if isinstance(reply, Failure):
            reply = Failure(reply.silo, printable(reply.reason), reply.kind)
        self.on_reply(phase, reply)
        self.row(reply_row(rnd, phase, reply, extra or {}))
        if isinstance(reply, Failure) and phase == "fit":
            self.failures.append(reply)


def _printable_row(row: MetricRow) -> MetricRow:
    values = {printable(k): printable(v) if isinstance(v, str) else v for k, v in row.values.items()}
    failure = None if row.failure is None else printable(row.failure)
    return replace(row, values=values, failure=failure)


@dataclass(frozen=True)
class Gathered:
    """What a round's gathering gave: how many updates went into the aggregation, and bytes uploaded."""

    updates: int
    measured: dict[str, Any]  # upload_bytes and upload_bytes_raw (the plain model's size)


@dataclass(frozen=True)
class RoundFit:
    """What a round asks: ``instructions`` and the global model ``params`` to the ``selected`` silos."""

    round: int
    selected: Sequence[str]
    params: ArrayDict
    instructions: FitInstructions


class Gatherer(Protocol):
    def gather(self, fit: RoundFit, aggregation: Aggregation, log: RoundLog) -> Gathered:
        """Send the fit, fold what comes back into ``aggregation``; RoundFailed if too few came."""


def require_updates(rnd: int, usable: int, selected: Sequence[str], min_fit: int, failures: Sequence[Failure]) -> None:
    """Raise RoundFailed when fewer than ``min_fit`` usable updates came, naming why the others failed."""
    if usable >= max(min_fit, 1):
        return
    raise RoundFailed(
        f"round {rnd}: {usable} of {len(selected)} silos returned a usable update, "
        f"min_fit_clients={min_fit} ({describe_failures(failures)})",
        "fix the failing silos (see metrics.jsonl) and resume with `fedsilo run --resume RUN_DIR`",
    )


def describe_failures(failures: Sequence[Failure], names_per_reason: int = 3) -> str:
    """The round's failures grouped by reason, a few silo names each: one readable line even for 1000 silos."""
    if not failures:
        return "no replies"
    by_reason: dict[str, list[str]] = {}
    for f in failures:
        by_reason.setdefault(f.reason, []).append(f.silo)
    parts = []
    for reason, silos in by_reason.items():
        names = ", ".join(silos[:names_per_reason])
        more = f" and {len(silos) - names_per_reason} more" if len(silos) > names_per_reason else ""
        parts.append(f"{names}{more}: {reason}")
    return "; ".join(parts)


@dataclass(frozen=True)
class PlainGatherer:
    """Each silo's model (or its encoded update) is decoded, checked and folded in as it arrives."""

    transport: Transport
    timeout: float
    max_update_bytes: int
    min_fit: int

    def gather(self, fit: RoundFit, aggregation: Aggregation, log: RoundLog) -> Gathered:
        rnd, params = fit.round, fit.params
        expected = spec_of(params)
        sent = raw = 0
        for reply in self.transport.fit(fit.selected, FitIns(rnd, params, fit.instructions), self.timeout):
            sizes: dict[str, Any] = {}
            if isinstance(reply, FitRes):
                got = receive_fit(reply, params, expected, fit.instructions.codec, self.max_update_bytes)
                sizes = {"upload_bytes": got.upload_bytes, "upload_bytes_raw": got.upload_bytes_raw}
                sent, raw = sent + got.upload_bytes, raw + got.upload_bytes_raw
                if got.result is None:
                    reply = Failure(reply.silo, got.rejected or "rejected", "rejected")
                else:
                    reply = got.result
                    aggregation.add(reply)
            log.reply(rnd, "fit", reply, sizes)
        require_updates(rnd, aggregation.count, fit.selected, self.min_fit, log.failures)
        return Gathered(aggregation.count, {"upload_bytes": sent, "upload_bytes_raw": raw})
