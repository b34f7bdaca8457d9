"""Byzantine-robust aggregation: coordinate-wise median, trimmed mean, Krum and Multi-Krum.

- median and trimmed mean: Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed
  Learning: Towards Optimal Statistical Rates", ICML 2018.
- Krum and Multi-Krum: Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with
  Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017.

They bound what a few silos sending arbitrary models (bugs, poisoned data, a compromised site)
can do to the global model, at a price in accuracy when silos are honest but their data differ.

Weights: none. All four rules treat every update alike, as in the papers: ``num_examples`` is
self-reported, and a rule that trusted it could be outvoted by one silo claiming a huge count.
(The server-side row of each update still records its count.)

Memory: these rules need every update at once, and an update's arrays may be views valid only
during ``add()`` (e.g. over a worker's shared memory), so each is copied: the server holds
``silos x model`` during aggregation (plus, while aggregating one array, ``silos x`` that array
in float64), where FedAvg holds one model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fedsilo.errors import ParameterError, RoundFailed
from fedsilo.strategy.aggregate import (
    coordinate_median,
    krum_min_updates,
    multi_krum,
    trimmed_mean,
)
from fedsilo.strategy.base import Sampling, StrategyState
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import StrategyExtras
from fedsilo.wire.messages import FitRes

RobustName = Literal["median", "trimmed_mean", "krum", "multi_krum"]
ROBUST_NAMES: tuple[RobustName, ...] = ("median", "trimmed_mean", "krum", "multi_krum")


@dataclass(frozen=True)
class Robust:
    """A robust rule; ``beta`` is for trimmed_mean, ``byzantine`` (f) and ``num_selected`` for Krum.

    ``num_selected`` (Multi-Krum's m) of ``None`` means ``n - f`` of the ``n`` updates received,
    as in the paper; ``krum`` always selects one.
    """

    name: RobustName = "median"
    sampling: Sampling = field(default_factory=Sampling)
    beta: float = 0.1
    byzantine: int = 1
    num_selected: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.name not in ROBUST_NAMES:
            problems.append(f"name must be one of {', '.join(ROBUST_NAMES)}, not {self.name!r}")
        if not 0 <= self.beta < 0.5:
            problems.append(f"beta must be in [0, 0.5), got {self.beta}")
        if self.byzantine < 0:
            problems.append(f"byzantine must be >= 0, got {self.byzantine}")
        if self.num_selected is not None and self.num_selected < 1:
            problems.append(f"num_selected must be >= 1, got {self.num_selected}")
        if problems:
            raise ParameterError("; ".join(problems), "see the README's strategy table (the YAML keys are the same)")

    def min_updates(self) -> int:
        """Fewest updates a round needs for this rule's guarantee."""
        if self.name == "krum":
            return krum_min_updates(self.byzantine)
        if self.name == "multi_krum":
            return max(krum_min_updates(self.byzantine), (self.num_selected or 1) + self.byzantine)
        return 1

    def initial_state(self, parameters: ArrayDict) -> StrategyState:
        return StrategyState()

    def fit_extras(self, round: int, state: StrategyState) -> StrategyExtras:
        return StrategyExtras()

    def begin(self, round: int, global_parameters: ArrayDict, state: StrategyState) -> RobustAggregation:
        return RobustAggregation(self, round, state)


class RobustAggregation:
    """Keeps a copy of every update, then applies the rule once all have arrived."""

    def __init__(self, strategy: Robust, round: int, state: StrategyState) -> None:
        self._strategy = strategy
        self._round = round
        self._state = state
        self._updates: list[ArrayDict] = []
        self.selected: list[int] = []  # Krum's choice, by arrival index (for logs and tests)

    def add(self, result: FitRes) -> None:
        self._updates.append({k: v.copy() for k, v in result.parameters.items()})

    @property
    def count(self) -> int:
        return len(self._updates)

    def finish(self) -> tuple[ArrayDict, StrategyState]:
        s, n = self._strategy, len(self._updates)
        if s.name == "median":
            return coordinate_median(self._updates), self._state
        if s.name == "trimmed_mean":
            return trimmed_mean(self._updates, s.beta), self._state
        if n < s.min_updates():
            raise RoundFailed(
                f"round {self._round}: {s.name} with byzantine={s.byzantine}"
                + (f" and num_selected={s.num_selected}" if s.name == "multi_krum" and s.num_selected else "")
                + f" needs at least {s.min_updates()} updates, got {n}",
                "fix the failing silos and resume with `fedsilo run --resume RUN_DIR`, or lower strategy.byzantine",
            )
        m = 1 if s.name == "krum" else (s.num_selected or n - s.byzantine)
        mean, self.selected = multi_krum(self._updates, s.byzantine, m)
        return mean, self._state
