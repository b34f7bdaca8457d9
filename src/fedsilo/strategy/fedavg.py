"""FedAvg: the new global model is the example-weighted mean of the silos' models.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", AISTATS 2017.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedsilo.strategy.base import Sampling, StrategyState
from fedsilo.wire.arrays import ArrayDict, WeightedSum
from fedsilo.wire.instructions import StrategyExtras
from fedsilo.wire.messages import FitRes


class WeightedMeanAggregation:
    """Streaming example-weighted mean: one model in memory (float64), whatever the silo count."""

    def __init__(self, like: ArrayDict, state: StrategyState) -> None:
        self._like = like
        self._state = state
        self._sum = WeightedSum()

    def add(self, result: FitRes) -> None:
        self._sum.add(result.parameters, result.num_examples)

    @property
    def count(self) -> int:
        return self._sum.count

    def finish(self) -> tuple[ArrayDict, StrategyState]:
        return self._sum.mean(self._like), self._state


@dataclass(frozen=True)
class FedAvg:
    sampling: Sampling = field(default_factory=Sampling)
    name: str = "fedavg"

    def initial_state(self, parameters: ArrayDict) -> StrategyState:
        return StrategyState()

    def fit_extras(self, round: int, state: StrategyState) -> StrategyExtras:
        return StrategyExtras()

    def begin(self, round: int, global_parameters: ArrayDict, state: StrategyState) -> WeightedMeanAggregation:
        return WeightedMeanAggregation(global_parameters, state)
