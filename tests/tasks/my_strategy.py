# my_strategy.py (beside experiment.yaml)
from dataclasses import dataclass

import numpy as np

from fedsilo import FitRes, Sampling, StrategyExtras, StrategyState, WeightedSum


@dataclass(frozen=True)
class TrimmedFedAvg:
    """FedAvg without the beta share of silos whose models moved furthest from the global model."""

    sampling: Sampling  # fedsilo builds it from strategy.fraction_fit, min_fit_clients, ...
    beta: float = 0.2  # your own parameter: strategy.beta in the YAML
    name: str = "trimmed_fedavg"

    def initial_state(self, parameters):
        return StrategyState(values={"dropped": 0})  # carried between rounds, saved in every checkpoint

    def fit_extras(self, round, state):
        return StrategyExtras()  # nothing extra for the silos' training

    def begin(self, round, global_parameters, state):
        return TrimmedRound(self.beta, global_parameters, state)


class TrimmedRound:
    """One round's aggregation: keep every update (they are views: copy them), average the nearest."""

    def __init__(self, beta, global_parameters, state):
        self.beta, self.global_parameters, self.state, self.updates = beta, global_parameters, state, []

    def add(self, result: FitRes):
        self.updates.append(({k: v.copy() for k, v in result.parameters.items()}, result.num_examples))

    @property
    def count(self):
        return len(self.updates)

    def finish(self):
        def moved(update):
            return sum(float(np.sum((update[k] - v) ** 2)) for k, v in self.global_parameters.items())

        drop = int(self.beta * len(self.updates))
        mean = WeightedSum()
        for update, examples in sorted(self.updates, key=lambda u: moved(u[0]))[: len(self.updates) - drop]:
            mean.add(update, examples)
        dropped = int(self.state.values["dropped"]) + drop
        return mean.mean(self.global_parameters), StrategyState(values={"dropped": dropped})
