"""The strategy interface.

A strategy is configuration plus pure math. Its state is explicit: ``StrategyState`` is passed in
and a new one is returned, so a checkpoint can save it and a resumed run continues exactly. A
strategy does no I/O and never sees the transport.

Aggregation is streaming: the server opens an :class:`Aggregation` for the round and feeds each
accepted update as it arrives, so mean-based strategies hold one model in memory, not one per silo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import StrategyExtras
from fedsilo.wire.messages import FitRes


@dataclass(frozen=True, slots=True)
class StrategyState:
    """Everything a strategy carries between rounds: arrays (e.g. momentum) and scalars."""

    arrays: ArrayDict = field(default_factory=dict)
    values: Mapping[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sampling:
    """How many silos take part in each round (the same knobs as Flower's, same meaning)."""

    fraction_fit: float = 1.0
    fraction_evaluate: float = 1.0
    min_fit_clients: int = 1
    min_evaluate_clients: int = 1
    min_available_clients: int = 1


class Aggregation(Protocol):
    """One round's aggregation in progress."""

    def add(self, result: FitRes) -> None:
        """Fold in one accepted update; ``result.parameters`` may be a view valid only now."""

    @property
    def count(self) -> int:
        """How many updates were added."""

    def finish(self) -> tuple[ArrayDict, StrategyState]:
        """The new global model and state; called once, only when ``count`` > 0."""


class Strategy(Protocol):
    """What the server loop asks of a strategy, built-in or your own (``strategy: {name: FILE.py:Class}``).

    A class of your own may say ``individual_updates = False``: its aggregation needs only the
    example-weighted mean of the round's updates, so it may run with secure aggregation and central
    DP, which hand ``begin()``'s aggregation ONE pre-averaged update. Without it, fedsilo assumes the
    strategy looks at each update on its own, and refuses those two (as it refuses the robust rules).
    """

    @property
    def name(self) -> str: ...

    @property
    def sampling(self) -> Sampling: ...

    def initial_state(self, parameters: ArrayDict) -> StrategyState:
        """State before round 1, given the initial global model."""

    def fit_extras(self, round: int, state: StrategyState) -> StrategyExtras:
        """What the strategy adds to every silo's fit instructions (e.g. FedProx's ``proximal_mu``)."""

    def begin(self, round: int, global_parameters: ArrayDict, state: StrategyState) -> Aggregation:
        """Open the aggregation of ``round``."""


@runtime_checkable
class SpendsPrivacy(Protocol):
    """A strategy that spends a privacy budget (central DP): the server loop asks it two things."""

    def stop_reason(self, round: int, state: StrategyState) -> str | None:
        """Why ``round`` must not run (it would pass the target epsilon), or None."""

    def round_metrics(self, state: StrategyState) -> dict[str, float]:
        """What the round's server row records (epsilon, delta, noise multiplier, clip norm)."""
