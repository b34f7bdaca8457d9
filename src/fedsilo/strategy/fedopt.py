"""FedOpt: a server optimizer over FedAvg's pseudo-gradient (FedAvgM, FedAdam, FedYogi, FedAdagrad).

- ``fedavgm``: server momentum. Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data
  Distribution for Federated Visual Classification", arXiv:1909.06335, 2019.
- ``fedadagrad``, ``fedadam``, ``fedyogi``: Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar,
  McMahan, "Adaptive Federated Optimization", ICLR 2021.

Each round, silos train with SGD from the global model ``x`` (their learning rate is the paper's
``eta_l``: ``train.lr``). The server takes ``delta = example-weighted mean of their models - x``
(Reddi et al. average unweighted over clients; weighting by examples is FedAvg's convention and
reduces to theirs when silos are equal) and steps ``x`` with the optimizer's rule
(:mod:`fedsilo.strategy.server_opt`), with server learning rate ``eta``.

The optimizer's moments live in ``StrategyState.arrays`` as ``m/<array>`` and ``v/<array>``
(float32, or float64 for float64 arrays), so checkpoints carry them and a resumed run continues
exactly. Two kinds of array take the plain weighted mean instead of an optimizer step, and have no
moments: integer arrays (e.g. BatchNorm's ``num_batches_tracked``: a step of ``eta * m / sqrt(v)``
means nothing for a counter) and float arrays whose name matches a ``mean_only`` pattern (by
default BatchNorm's running statistics, which are estimates of the data, not parameters to
descend on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from fnmatch import fnmatchcase
from typing import Literal

import numpy as np

from fedsilo.errors import ParameterError, RunDirError
from fedsilo.strategy.base import Sampling, StrategyState
from fedsilo.strategy.server_opt import Rule, adaptive_step, heavy_ball, initial_second_moment
from fedsilo.wire.arrays import ArrayDict, WeightedSum
from fedsilo.wire.instructions import StrategyExtras
from fedsilo.wire.messages import FitRes

FedOptName = Literal["fedavgm", "fedadagrad", "fedadam", "fedyogi"]
FEDOPT_NAMES: tuple[FedOptName, ...] = ("fedavgm", "fedadagrad", "fedadam", "fedyogi")
DEFAULT_MEAN_ONLY = ("*running_mean", "*running_var")
_RULES: dict[str, Rule] = {"fedadagrad": "adagrad", "fedadam": "adam", "fedyogi": "yogi"}
_FIX = "see the strategy table in the README (the YAML keys are the same)"
_F64 = np.empty(0, np.float64)  # a dtype template: WeightedSum.mean casts to the template's dtype


def _state_dtype(array: np.ndarray) -> np.dtype:
    """Moments in float32 at least (a float16 ``tau**2`` would underflow), float64 for float64."""
    return np.result_type(array.dtype, np.float32)


#: Each rule's default server learning rate (the YAML's ``strategy: {name: ...}`` reads it from here):
#: FedAvgM's ``eta`` 1 with momentum 0 is FedAvg exactly; Reddi et al. tune the adaptive rules' ``eta``
#: per task, and these are starting points.
DEFAULT_ETA: dict[FedOptName, float] = {"fedavgm": 1.0, "fedadagrad": 1e-1, "fedadam": 1e-2, "fedyogi": 1e-2}


@dataclass(frozen=True, init=False)
class FedOpt:
    """One server optimizer: ``name`` picks the rule; ``beta1`` is FedAvgM's momentum.

    ``eta`` defaults to the rule's own (:data:`DEFAULT_ETA`). ``beta2`` is used by fedadam and
    fedyogi only; ``tau`` (the adaptivity, added to ``sqrt(v)``) by the three adaptive rules only.
    """

    name: FedOptName
    sampling: Sampling
    eta: float
    beta1: float
    beta2: float
    tau: float
    mean_only: Sequence[str]

    def __init__(
        self,
        name: FedOptName = "fedadam",
        sampling: Sampling | None = None,
        eta: float | None = None,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        mean_only: Sequence[str] = DEFAULT_MEAN_ONLY,
    ) -> None:
        if name not in FEDOPT_NAMES:
            raise ParameterError(f"name must be one of {', '.join(FEDOPT_NAMES)}, not {name!r}", _FIX)
        sampling = Sampling() if sampling is None else sampling
        values = (name, sampling, DEFAULT_ETA[name] if eta is None else eta, beta1, beta2, tau, mean_only)
        for f, value in zip(fields(self), values, strict=True):
            object.__setattr__(self, f.name, value)  # frozen: each field is set once, here
        problems = []
        if not self.eta > 0:
            problems.append(f"eta must be > 0, got {self.eta}")
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                problems.append(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if not self.tau > 0:
            problems.append(f"tau must be > 0, got {self.tau}")
        if problems:
            raise ParameterError("; ".join(problems), _FIX)

    def stepped(self, name: str, array: np.ndarray) -> bool:
        """Whether the optimizer steps this array (otherwise it takes the weighted mean)."""
        return np.issubdtype(array.dtype, np.floating) and not any(fnmatchcase(name, p) for p in self.mean_only)

    def state_keys(self, name: str) -> tuple[str, ...]:
        return (f"m/{name}",) if self.name == "fedavgm" else (f"m/{name}", f"v/{name}")

    def initial_state(self, parameters: ArrayDict) -> StrategyState:
        arrays: ArrayDict = {}
        for name, x in parameters.items():
            if self.stepped(name, x):
                dtype = _state_dtype(x)
                arrays[f"m/{name}"] = np.zeros(x.shape, dtype)
                if self.name != "fedavgm":
                    arrays[f"v/{name}"] = np.asarray(initial_second_moment(x.shape, self.tau), dtype)
        return StrategyState(arrays, {})

    def fit_extras(self, round: int, state: StrategyState) -> StrategyExtras:
        return StrategyExtras()

    def begin(self, round: int, global_parameters: ArrayDict, state: StrategyState) -> FedOptAggregation:
        missing = [
            key
            for name, x in global_parameters.items()
            if self.stepped(name, x)
            for key in self.state_keys(name)
            if key not in state.arrays
        ]
        if missing:
            raise RunDirError(
                f"{self.name} state lacks {len(missing)} array(s) ({', '.join(missing[:3])}...): "
                "it was not made by this strategy for this model",
                "resume with the strategy and model the run started with",
            )
        return FedOptAggregation(self, global_parameters, state)


class FedOptAggregation:
    """Streams the weighted mean (one model in float64), then takes one optimizer step."""

    def __init__(self, strategy: FedOpt, global_parameters: ArrayDict, state: StrategyState) -> None:
        self._strategy = strategy
        self._global = global_parameters
        self._state = state
        self._sum = WeightedSum()

    def add(self, result: FitRes) -> None:
        self._sum.add(result.parameters, result.num_examples)

    @property
    def count(self) -> int:
        return self._sum.count

    def finish(self) -> tuple[ArrayDict, StrategyState]:
        s, old = self._strategy, self._state.arrays
        like = {k: (_F64 if s.stepped(k, x) else x) for k, x in self._global.items()}
        mean = self._sum.mean(like)  # float64 for stepped arrays, rounded and cast for the others
        params: ArrayDict = {}
        arrays: ArrayDict = {}
        for name, x in self._global.items():
            if not s.stepped(name, x):
                params[name] = mean[name]
                continue
            x64 = x.astype(np.float64)
            delta = mean[name] - x64
            m = old[f"m/{name}"].astype(np.float64)
            if s.name == "fedavgm":
                new_x, new_m = heavy_ball(x64, delta, m, s.eta, s.beta1)
            else:
                v = old[f"v/{name}"].astype(np.float64)
                new_x, new_m, new_v = adaptive_step(_RULES[s.name], x64, delta, m, v, s.eta, s.beta1, s.beta2, s.tau)
                arrays[f"v/{name}"] = np.asarray(new_v, old[f"v/{name}"].dtype)
            arrays[f"m/{name}"] = np.asarray(new_m, old[f"m/{name}"].dtype)
            params[name] = np.asarray(new_x, x.dtype)
        ordered = {k: arrays[k] for k in old if k in arrays}  # the state keeps its order on disk
        return params, StrategyState(ordered, self._state.values)
