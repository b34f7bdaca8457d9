"""FedProx: FedAvg's aggregation, with a proximal term in every silo's local objective.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in Heterogeneous Networks",
MLSys 2020.

Each silo minimises ``loss(w) + mu/2 * ||w - w_global||^2``, where ``w_global`` is the model it
received at the start of the round. The term pulls local models back towards the global one, which
limits client drift when silos' data differ (non-IID) or when they train for many local epochs.
The server side is plain FedAvg; the strategy's only job is to send ``proximal_mu`` with every
fit. The PyTorch client adds the term itself; a NumPy task's ``train`` reads
``settings.proximal_mu`` and must add it (its gradient is ``mu * (w - w_global)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedsilo.errors import ParameterError
from fedsilo.strategy.base import Sampling, StrategyState
from fedsilo.strategy.fedavg import WeightedMeanAggregation
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import StrategyExtras


@dataclass(frozen=True)
class FedProx:
    """FedProx with proximal coefficient ``mu`` (> 0; ``mu = 0`` would be FedAvg)."""

    mu: float = 0.01
    sampling: Sampling = field(default_factory=Sampling)
    name: str = "fedprox"

    def __post_init__(self) -> None:
        if not self.mu > 0:
            raise ParameterError(f"FedProx needs mu > 0, got {self.mu}", "use e.g. mu=0.01 (mu = 0 is FedAvg)")

    def initial_state(self, parameters: ArrayDict) -> StrategyState:
        return StrategyState()

    def fit_extras(self, round: int, state: StrategyState) -> StrategyExtras:
        return StrategyExtras(proximal_mu=self.mu)

    def begin(self, round: int, global_parameters: ArrayDict, state: StrategyState) -> WeightedMeanAggregation:
        return WeightedMeanAggregation(global_parameters, state)
