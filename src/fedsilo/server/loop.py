"""The round loop: sample, instruct, gather by deadline, aggregate, evaluate, checkpoint.

It talks to silos only through a :class:`Transport`, so the same loop drives simulation, local
processes and real deployments, and through one :class:`~fedsilo.server.gather.Gatherer`, so it
never branches on how updates come (in the clear, or by secure aggregation). Every received update
is checked by the gatherer (the trust boundary); a bad one becomes a Failure and the round goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from fedsilo.errors import RoundFailed
from fedsilo.server.evaluation import federated_summary
from fedsilo.server.gather import Gatherer, PlainGatherer, RoundFit, RoundLog
from fedsilo.server.registry import EVALUATE, FIT, round_rng, sample_silos, wait_for_silos
from fedsilo.server.secure_gather import SecureGatherer
from fedsilo.server.settings import LoopSettings
from fedsilo.server.uplink import receive_evaluation
from fedsilo.strategy.base import SpendsPrivacy, Strategy, StrategyState
from fedsilo.tracking.rows import MetricRow, central_row, failed_round_row, federated_row, round_row
from fedsilo.transport.base import Transport
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitRes

#: Scores the global model of a round on server-side data: ``(round, params) -> (loss or None, metrics)``.
CentralEvaluate = Callable[[int, ArrayDict], tuple[float | None, dict[str, Any]]]
Checkpointer = Callable[[int, ArrayDict, StrategyState], object]


class Observer(Protocol):
    """Receives what happens; the run folder and the console are both observers."""

    def on_round_start(self, round: int, silos: Sequence[str]) -> None: ...

    def on_reply(self, round: int, phase: str, reply: FitRes | EvaluateRes | Failure) -> None: ...

    def on_metrics(self, row: MetricRow) -> None: ...

    def on_round_end(self, round: int, rows: Sequence[MetricRow]) -> None: ...


@dataclass(frozen=True)
class LoopResult:
    parameters: ArrayDict
    state: StrategyState
    stopped: str | None = None  # why training ended before settings.rounds (a privacy budget kept)


@dataclass
class ServerLoop:
    transport: Transport
    strategy: Strategy
    settings: LoopSettings
    central_evaluate: CentralEvaluate | None = None
    observers: Sequence[Observer] = ()
    checkpoint: Checkpointer | None = None
    expected_silos: Sequence[str] = ()
    gatherer: Gatherer = field(init=False)

    def __post_init__(self) -> None:
        s, min_fit = self.settings, self.strategy.sampling.min_fit_clients
        if s.secure_aggregation is not None:
            self.gatherer = SecureGatherer(self.transport, s.round_timeout, s.secure_aggregation, min_fit)
        else:
            self.gatherer = PlainGatherer(self.transport, s.round_timeout, s.max_update_bytes, min_fit)

    def _log(self, rnd: int) -> RoundLog:
        def emit(row: MetricRow) -> None:
            for obs in self.observers:
                obs.on_metrics(row)

        def on_reply(phase: str, reply: FitRes | EvaluateRes | Failure) -> None:
            for obs in self.observers:
                obs.on_reply(rnd, phase, reply)

        return RoundLog(emit, on_reply)

    def _end(self, rnd: int, rows: Sequence[MetricRow]) -> None:
        for obs in self.observers:
            obs.on_round_end(rnd, rows)

    def evaluate_central(self, rnd: int, params: ArrayDict, log: RoundLog) -> None:
        every = self.settings.evaluate_every
        if self.central_evaluate is None or not (rnd % every == 0 or rnd == self.settings.rounds):
            return
        loss, metrics = self.central_evaluate(rnd, params)
        log.row(central_row(rnd, loss, metrics))

    def run(self, params: ArrayDict, state: StrategyState, start_round: int = 1) -> LoopResult:
        """Run rounds ``start_round..settings.rounds``; returns the final model, state and any early stop."""
        if start_round == 1:
            log = self._log(0)
            self.evaluate_central(0, params, log)
            self._end(0, log.rows)
        failed_in_a_row = 0
        for rnd in range(start_round, self.settings.rounds + 1):
            if isinstance(self.strategy, SpendsPrivacy):
                stopped = self.strategy.stop_reason(rnd, state)
                if stopped is not None:  # the budget is kept: not an error, the run ends here
                    return LoopResult(params, state, stopped)
            try:
                params, state = self.run_round(rnd, params, state)
                failed_in_a_row = 0
            except RoundFailed as exc:
                failed_in_a_row += 1
                if failed_in_a_row > self.settings.failed_rounds_allowed:
                    raise
                self._skip_failed_round(rnd, params, state, exc)
        return LoopResult(params, state)

    def _skip_failed_round(self, rnd: int, params: ArrayDict, state: StrategyState, exc: RoundFailed) -> None:
        """Keep the last good model and go on: a silo that reconnects takes part in the next round."""
        log = self._log(rnd)
        log.row(failed_round_row(rnd, exc.message))
        if self.checkpoint is not None:
            self.checkpoint(rnd, params, state)
        self._end(rnd, log.rows)

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
        log = self._log(rnd)
        instructions = self._instructions(rnd, state)
        aggregation = self.strategy.begin(rnd, params, state)
        gathered = self.gatherer.gather(RoundFit(rnd, selected, params, instructions), aggregation, log)
        params, state = aggregation.finish()
        privacy = self.strategy.round_metrics(state) if isinstance(self.strategy, SpendsPrivacy) else {}
        log.row(round_row(rnd, gathered.updates, {**gathered.measured, **privacy}))
        self.evaluate_central(rnd, params, log)
        self._evaluate_federated(rnd, params, available, log)
        if self.checkpoint is not None:
            self.checkpoint(rnd, params, state)
        self._end(rnd, log.rows)
        return params, state

    def _instructions(self, rnd: int, state: StrategyState) -> FitInstructions:
        """This round's fit instructions: the plan's, with the run's seed and the strategy's extras."""
        template = self.settings.instructions
        train = replace(template.train, seed=self.settings.seed)
        return replace(template, train=train, strategy=self.strategy.fit_extras(rnd, state))

    def _evaluate_federated(self, rnd: int, params: ArrayDict, available: list[str], log: RoundLog) -> None:
        sampling = self.strategy.sampling
        if sampling.fraction_evaluate <= 0:
            return
        rng = round_rng(self.settings.seed, rnd, EVALUATE)
        selected = sample_silos(available, sampling.fraction_evaluate, sampling.min_evaluate_clients, rng)
        ins = EvaluateIns(rnd, params, EvaluateInstructions(self.settings.seed))
        results = []
        for reply in self.transport.evaluate(selected, ins, self.settings.round_timeout):
            if isinstance(reply, EvaluateRes):
                reply = receive_evaluation(reply)  # untrusted, as a fit is
            log.reply(rnd, "evaluate", reply)
            if isinstance(reply, EvaluateRes) and reply.num_examples > 0:
                results.append(reply)
        if results:
            log.row(federated_row(rnd, federated_summary(results)))
