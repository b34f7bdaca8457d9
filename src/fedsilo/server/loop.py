"""The round loop: sample, broadcast, gather by deadline, accumulate, aggregate, evaluate, checkpoint.

It talks to silos only through a :class:`Transport`, so the same loop drives simulation, local
processes and real deployments. Every received update is checked here (the trust boundary);
a bad one becomes a Failure and the round goes on with the others. With secure aggregation on
(``LoopSettings.secure_aggregation``) fit replies carry no parameters and the round's mean comes
from :func:`~fedsilo.server.secure_aggregation.secure_mean`, fed to the strategy as one update.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedsilo.arrays import ArrayDict, spec_of, wire_size
from fedsilo.compression import Codec
from fedsilo.errors import RoundFailed, UpdateRejected
from fedsilo.messages import (
    DEFAULT_MAX_UPDATE_BYTES,
    Config,
    EvaluateIns,
    EvaluateRes,
    Failure,
    FitIns,
    FitRes,
    check_num_examples,
)
from fedsilo.server.registry import EVALUATE, FIT, round_rng, sample_silos, wait_for_silos
from fedsilo.server.secure_aggregation import SecAggSettings, secure_mean
from fedsilo.server.uplink import receive_fit
from fedsilo.silo.uplink import codec_config
from fedsilo.strategy.base import SpendsPrivacy, Strategy, StrategyState
from fedsilo.transport.base import Transport

Row = dict[str, Any]
#: Scores the global model of a round on server-side data: ``(round, params) -> (loss or None, metrics)``.
CentralEvaluate = Callable[[int, ArrayDict], tuple[float | None, dict[str, Any]]]


class Observer(Protocol):
    """Receives what happens; the run folder and the console are both observers."""

    def on_round_start(self, round: int, silos: Sequence[str]) -> None: ...

    def on_reply(self, round: int, phase: str, reply: FitRes | EvaluateRes | Failure) -> None: ...

    def on_metrics(self, row: Row) -> None: ...

    def on_round_end(self, round: int, rows: Sequence[Row]) -> None: ...


@dataclass(frozen=True)
class LoopSettings:
    rounds: int
    seed: int = 0
    fit_config: Config = field(default_factory=dict)
    round_timeout: float = 600.0
    wait_timeout: float = 60.0
    max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES
    failed_rounds_allowed: int = 0  # consecutive failed rounds that keep the last good model and go on
    secure_aggregation: SecAggSettings | None = None  # None: silos send their models in the clear
    evaluate_every: int = 1  # central evaluation at round 0, every N rounds and at the last round
    codec: Codec = field(default_factory=Codec)  # how silos encode their updates (the loop decodes)


Checkpointer = Callable[[int, ArrayDict, StrategyState], object]


@dataclass
class ServerLoop:
    transport: Transport
    strategy: Strategy
    settings: LoopSettings
    central_evaluate: CentralEvaluate | None = None
    observers: Sequence[Observer] = ()
    checkpoint: Checkpointer | None = None
    expected_silos: Sequence[str] = ()
    stopped: str | None = field(default=None, init=False)  # why training ended before settings.rounds

    def _emit(self, row: Row) -> Row:
        for obs in self.observers:
            obs.on_metrics(row)
        return row

    def evaluate_central(self, round: int, params: ArrayDict) -> Row | None:
        every = self.settings.evaluate_every
        if self.central_evaluate is None or not (round % every == 0 or round == self.settings.rounds):
            return None
        loss, metrics = self.central_evaluate(round, params)
        return self._emit(
            {"round": round, "scope": "server", "silo": None, "phase": "evaluate", "loss": loss, **metrics}
        )

    def run(self, params: ArrayDict, state: StrategyState, start_round: int = 1) -> tuple[ArrayDict, StrategyState]:
        """Run rounds ``start_round..settings.rounds``; returns the final model and state."""
        if start_round == 1:
            row = self.evaluate_central(0, params)
            for obs in self.observers:
                obs.on_round_end(0, [row] if row else [])
        failed_in_a_row = 0
        for rnd in range(start_round, self.settings.rounds + 1):
            if isinstance(self.strategy, SpendsPrivacy):
                self.stopped = self.strategy.stop_reason(rnd, state)
                if self.stopped is not None:  # the budget is kept: not an error, the run ends here
                    break
            try:
                params, state = self.run_round(rnd, params, state)
                failed_in_a_row = 0
            except RoundFailed as exc:
                failed_in_a_row += 1
                if failed_in_a_row > self.settings.failed_rounds_allowed:
                    raise
                self._skip_failed_round(rnd, params, state, exc)
        return params, state

    def _skip_failed_round(self, rnd: int, params: ArrayDict, state: StrategyState, exc: RoundFailed) -> None:
        """Keep the last good model and go on: a silo that reconnects takes part in the next round."""
        row = self._emit({"round": rnd, "scope": "server", "silo": None, "phase": "fit", "failure": exc.message})
        if self.checkpoint is not None:
            self.checkpoint(rnd, params, state)
        for obs in self.observers:
            obs.on_round_end(rnd, [row])

    def run_round(self, rnd: int, params: ArrayDict, state: StrategyState) -> tuple[ArrayDict, StrategyState]:
        sampling = self.strategy.sampling
        available = wait_for_silos(
            self.transport.available, self.expected_silos, sampling.min_available_clients, self.settings.wait_timeout
        )
        selected = sample_silos(
            available, sampling.fraction_fit, sampling.min_fit_clients, round_rng(self.settings.seed, rnd, FIT)
        )
        for obs in self.observers:
            obs.on_round_start(rnd, selected)

        secagg = self.settings.secure_aggregation
        config = {
            **self.settings.fit_config,
            **self.strategy.fit_config(rnd, state),
            **codec_config(self.settings.codec),
            "seed": self.settings.seed,
        }
        if secagg is not None:
            config.update(secagg.fit_config(sampling.min_fit_clients))
        expected = spec_of(params)
        aggregation = self.strategy.begin(rnd, params, state)
        rows: list[Row] = []
        failures: list[Failure] = []
        kept: dict[str, int] = {}  # secure aggregation: silo -> examples, updates still in the silos
        wire = {"upload_bytes": 0, "upload_bytes_raw": 0}
        for reply in self.transport.fit(selected, FitIns(rnd, params, config), self.settings.round_timeout):
            sizes: Row = {}
            if isinstance(reply, FitRes):
                if secagg is not None:
                    try:
                        _check_kept(reply)
                        kept[reply.silo] = check_num_examples(reply.silo, reply.num_examples)
                    except UpdateRejected as exc:
                        reply = Failure(reply.silo, exc.message, "rejected")
                else:
                    got = receive_fit(reply, params, expected, self.settings.codec, self.settings.max_update_bytes)
                    sizes = {"upload_bytes": got.upload_bytes, "upload_bytes_raw": got.upload_bytes_raw}
                    wire = {k: wire[k] + sizes[k] for k in wire}
                    if got.result is None:
                        reply = Failure(reply.silo, got.rejected or "rejected", "rejected")
                    else:
                        reply = got.result
                        aggregation.add(reply)
            for obs in self.observers:
                obs.on_reply(rnd, "fit", reply)
            rows.append(self._emit({**_reply_row(rnd, "fit", reply), **sizes}))
            if isinstance(reply, Failure):
                failures.append(reply)

        usable = len(kept) if secagg is not None else aggregation.count
        if usable < max(sampling.min_fit_clients, 1):
            detail = describe_failures(failures)
            raise RoundFailed(
                f"round {rnd}: {usable} of {len(selected)} silos returned a usable update, "
                f"min_fit_clients={sampling.min_fit_clients} ({detail})",
                "fix the failing silos (see metrics.jsonl) and resume with `fedsilo run --resume RUN_DIR`",
            )
        if secagg is not None:
            # the session nonce and SecAgg+ graph seed must be unpredictable; the sum does not depend on them
            rng = np.random.default_rng(secrets.randbits(128))
            outcome = secure_mean(self.transport, rnd, params, kept, secagg, rng, max(sampling.min_fit_clients, 1))
            rows.extend(self._emit(row) for row in outcome.rows(rnd))
            aggregation.add(outcome.update)
            # what crossed the wire instead of the updates: the protocol's messages, beside plain models' size
            wire = {"upload_bytes": sum(outcome.sent.values()), "upload_bytes_raw": wire_size(expected) * len(kept)}
        updates = len(outcome.survivors) if secagg is not None else aggregation.count
        params, state = aggregation.finish()
        privacy = self.strategy.round_metrics(state) if isinstance(self.strategy, SpendsPrivacy) else {}
        # the round's own row: bytes uploaded and privacy spent (phase "round": not a silo's fit)
        server = {"round": rnd, "scope": "server", "silo": None, "phase": "round", "updates": updates}
        rows.append(self._emit({**server, **wire, **privacy}))

        central = self.evaluate_central(rnd, params)
        if central:
            rows.append(central)
        rows.extend(self._evaluate_federated(rnd, params, available))
        if self.checkpoint is not None:
            self.checkpoint(rnd, params, state)
        for obs in self.observers:
            obs.on_round_end(rnd, rows)
        return params, state

    def _evaluate_federated(self, rnd: int, params: ArrayDict, available: list[str]) -> list[Row]:
        sampling = self.strategy.sampling
        if sampling.fraction_evaluate <= 0:
            return []
        selected = sample_silos(
            available,
            sampling.fraction_evaluate,
            sampling.min_evaluate_clients,
            round_rng(self.settings.seed, rnd, EVALUATE),
        )
        rows, results = [], []
        for reply in self.transport.evaluate(
            selected, EvaluateIns(rnd, params, {"seed": self.settings.seed}), self.settings.round_timeout
        ):
            for obs in self.observers:
                obs.on_reply(rnd, "evaluate", reply)
            rows.append(self._emit(_reply_row(rnd, "evaluate", reply)))
            if isinstance(reply, EvaluateRes) and reply.num_examples > 0:
                results.append(reply)
        if results:
            rows.append(
                self._emit(
                    {
                        "round": rnd,
                        "scope": "federated",
                        "silo": None,
                        "phase": "evaluate",
                        **federated_summary(results),
                    }
                )
            )
        return rows


def _check_kept(reply: FitRes) -> None:
    """With secure aggregation a silo's update must stay in the silo: a reply with parameters is refused."""
    if reply.parameters:
        raise UpdateRejected(
            f"silo '{reply.silo}' sent its update in the clear although secure aggregation is on",
            "run the same fedsilo version on the silo as on the server",
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


def _reply_row(rnd: int, phase: str, reply: FitRes | EvaluateRes | Failure) -> Row:
    row: Row = {"round": rnd, "scope": "silo", "silo": reply.silo, "phase": phase}
    if isinstance(reply, Failure):
        return {**row, "failure": reply.reason, "failure_kind": reply.kind}
    row["num_examples"] = reply.num_examples
    if isinstance(reply, EvaluateRes):
        row["loss"] = reply.loss
    return {**reply.metrics, **row}  # a silo's metric named "round" must not move its row
