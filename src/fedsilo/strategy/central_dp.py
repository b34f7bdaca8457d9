"""Central DP: DP-FedAvg around a mean-based strategy, with fixed or adaptive clipping.

McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language Models",
ICLR 2018 (DP-FedAvg); Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning with
Adaptive Clipping", NeurIPS 2021 (adaptive clipping). The math is in :mod:`fedsilo.privacy.dp`.

The trusted-server model: the server sees each update, clips its delta (update - global model) to
L2 norm ``C`` as it arrives (one float64 sum in memory, not one update per silo), and releases only
the noised mean. Weights are uniform: an example-weighted mean would let a silo with many examples
move the mean by more than ``C / n``, so the sensitivity (and so the noise needed) would depend on
the data. The mean divides by ``n``, the *expected* number of silos per round (``fraction_fit`` of
all silos, at least ``min_fit_clients``), not by the number that answered: that is McMahan et al.'s
fixed-denominator estimator, whose sensitivity ``C / n`` does not depend on who dropped out (a round
with dropouts moves the model a little less). Noise of std ``z * C / n`` then makes each round a
Gaussian mechanism with noise multiplier ``z`` on a sample of silos taken at rate ``n / silos``.

The inner strategy (fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad) receives ONE
pre-averaged update, global + noised mean delta, so a server optimizer steps on the private mean.
Robust strategies look at each update on their own and are refused by the config.

With ``adaptive``, the server also counts the updates that needed no clipping, noises the count
(std ``count_stddev``) and moves ``C`` towards the ``target_quantile`` of the norms; updates then
get the larger noise multiplier ``z_delta`` so that updates and count together account as ``z``.

With secure aggregation (``distributed=True``) the server never sees an update on its own: each
silo clips its own delta and adds its share of the noise (:mod:`fedsilo.privacy.distributed_dp`),
so the sum it unmasks already carries noise of std at least ``z * C``. The wrapper then adds no
noise of its own; it hands the secure mean to the inner strategy and records the same event with
the accountant (noise multiplier ``z`` on a sum of sensitivity ``C``).

State (``dp.clip_norm``, ``dp.accountant`` as JSON) rides in :class:`StrategyState` next to the
inner strategy's, so checkpoints carry it and ``--resume`` continues with the same ``C`` and epsilon.
Noise comes from a generator seeded by (seed, round): reproducible, never the global RNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import ConfigError, ParameterError
from fedsilo.privacy import dp
from fedsilo.privacy.accounting import METHODS, Method, PrivacyAccountant, PrivacyEvent
from fedsilo.strategy.base import Aggregation, Sampling, Strategy, StrategyState
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.deltas import apply, delta
from fedsilo.wire.instructions import StrategyExtras
from fedsilo.wire.messages import FitRes

CLIP, ACCOUNTANT = "dp.clip_norm", "dp.accountant"
NOISE_STREAM = 0xD9  # the generator of round r is default_rng([seed, r, NOISE_STREAM])
_FIX = "see privacy.dp in the README (the YAML keys are the same)"


@dataclass(frozen=True)
class CentralDP:
    """DP-FedAvg around ``inner``; ``expected_silos`` and ``sampling_rate`` come from the plan."""

    inner: Strategy
    noise_multiplier: float
    clip_norm: float
    expected_silos: int
    sampling_rate: float
    delta: float = 1e-5
    target_epsilon: float | None = None
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    count_stddev: float | None = None
    accountant: Method = "rdp"
    seed: int = 0
    distributed: bool = False  # secure aggregation: the silos clipped and noised, the server only accounts

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ParameterError("invalid central DP settings: " + "; ".join(problems), _FIX)
        try:
            self.update_noise_multiplier  # noqa: B018 - checks count_stddev against the budget now
        except ConfigError as exc:
            raise ParameterError(exc.message, exc.fix or _FIX) from None

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def sampling(self) -> Sampling:
        return self.inner.sampling

    @property
    def event(self) -> PrivacyEvent:
        """What one round spends: the combined noise multiplier on a sample at the silo rate."""
        return PrivacyEvent(self.noise_multiplier, self.sampling_rate, 1)

    @property
    def count_noise(self) -> float:
        return self.count_stddev if self.count_stddev is not None else dp.default_count_stddev(self.expected_silos)

    @property
    def update_noise_multiplier(self) -> float:
        """``z`` on the updates; with adaptive clipping the larger ``z_delta`` (Andrew et al., Thm. 1)."""
        if not self.adaptive:
            return self.noise_multiplier
        return dp.update_noise_multiplier(self.noise_multiplier, self.count_noise)

    def initial_state(self, parameters: ArrayDict) -> StrategyState:
        inner = self.inner.initial_state(parameters)
        return _with_dp(inner, self.clip_norm, PrivacyAccountant(self.accountant))

    def fit_extras(self, round: int, state: StrategyState) -> StrategyExtras:
        return self.inner.fit_extras(round, _inner(state))

    def begin(self, round: int, global_parameters: ArrayDict, state: StrategyState) -> Aggregation:
        if self.distributed:
            return DistributedDPAggregation(self, round, global_parameters, state)
        return CentralDPAggregation(self, round, global_parameters, state)

    # --- what the server loop asks a strategy that spends privacy ------------------------------

    def accountant_of(self, state: StrategyState) -> PrivacyAccountant:
        return PrivacyAccountant.from_dict(json.loads(str(state.values[ACCOUNTANT])))

    def stop_reason(self, round: int, state: StrategyState) -> str | None:
        """Why ``round`` must not run (its epsilon would pass ``target_epsilon``), or None."""
        if self.target_epsilon is None:
            return None
        acc = self.accountant_of(state)
        if not acc.would_exceed(self.target_epsilon, self.delta, self.event):
            return None
        return (
            f"stopped before round {round}: it would take epsilon from {acc.epsilon(self.delta):.3f} "
            f"past privacy.dp.target_epsilon={self.target_epsilon:g} (delta {self.delta:g})"
        )

    def round_metrics(self, state: StrategyState) -> dict[str, float]:
        """Epsilon so far at ``delta``, and the settings the next round uses (for the round's row)."""
        return {
            "epsilon": self.accountant_of(state).epsilon(self.delta),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": float(state.values[CLIP]),
        }


class CentralDPAggregation:
    """Clip each delta on arrival, sum uniformly, then hand the noised mean to the inner strategy."""

    def __init__(self, owner: CentralDP, round: int, global_parameters: ArrayDict, state: StrategyState) -> None:
        self._owner, self._round, self._global, self._state = owner, round, global_parameters, state
        self._clip = float(state.values[CLIP])
        self._sum: ArrayDict = {k: np.zeros(np.shape(v), np.float64) for k, v in global_parameters.items()}
        self._count = 0
        self._unclipped = 0

    def add(self, result: FitRes) -> None:
        clipped, norm = dp.clip(delta(result.parameters, self._global), self._clip)
        for k, acc in self._sum.items():
            acc += clipped[k]
        self._count += 1
        self._unclipped += dp.is_unclipped(norm, self._clip)

    @property
    def count(self) -> int:
        return self._count

    def finish(self) -> tuple[ArrayDict, StrategyState]:
        o = self._owner
        rng = np.random.default_rng([o.seed, self._round, NOISE_STREAM])
        n = o.expected_silos
        clipped_mean = {k: v / n for k, v in self._sum.items()}
        mean = dp.add_central_noise(clipped_mean, o.update_noise_multiplier, self._clip, n, rng)
        clip = self._clip
        if o.adaptive:  # drawn after the model's noise, from the same round generator
            fraction = dp.noised_unclipped_fraction(self._unclipped, n, o.count_noise, rng)
            clip = dp.adapt_clip_norm(clip, fraction, o.target_quantile, o.clip_learning_rate)
        inner_state = _inner(self._state)
        aggregation = o.inner.begin(self._round, self._global, inner_state)
        aggregation.add(FitRes("dp-mean", apply(self._global, mean), 1))
        params, inner_state = aggregation.finish()
        return params, _with_dp(inner_state, clip, o.accountant_of(self._state).record(o.event))


class DistributedDPAggregation:
    """Secure aggregation's already-noised mean goes to the inner strategy as it is; the round is accounted."""

    def __init__(self, owner: CentralDP, round: int, global_parameters: ArrayDict, state: StrategyState) -> None:
        self._owner, self._state = owner, state
        self._inner = owner.inner.begin(round, global_parameters, _inner(state))

    def add(self, result: FitRes) -> None:
        self._inner.add(result)

    @property
    def count(self) -> int:
        return self._inner.count

    def finish(self) -> tuple[ArrayDict, StrategyState]:
        o = self._owner
        params, inner_state = self._inner.finish()
        clip = float(self._state.values[CLIP])
        return params, _with_dp(inner_state, clip, o.accountant_of(self._state).record(o.event))


def _problems(s: CentralDP) -> list[str]:
    """What the math refuses, each naming its parameter (the YAML's ``privacy.dp`` refuses the same)."""
    checks = {
        "noise_multiplier must be > 0": s.noise_multiplier > 0,
        "clip_norm must be > 0": s.clip_norm > 0,
        "expected_silos must be >= 1": s.expected_silos >= 1,
        "sampling_rate must be in (0, 1]": 0 < s.sampling_rate <= 1,
        "delta must be in (0, 1)": 0 < s.delta < 1,
        "target_epsilon must be > 0 or None": s.target_epsilon is None or s.target_epsilon > 0,
        "target_quantile must be in [0, 1]": 0 <= s.target_quantile <= 1,
        "clip_learning_rate must be >= 0": s.clip_learning_rate >= 0,
        "count_stddev must be > 0 or None": s.count_stddev is None or s.count_stddev > 0,
        f"accountant must be one of {', '.join(METHODS)}": s.accountant in METHODS,
    }
    return [f"{rule}, got {getattr(s, rule.split()[0])!r}" for rule, ok in checks.items() if not ok]


def _inner(state: StrategyState) -> StrategyState:
    return StrategyState(state.arrays, {k: v for k, v in state.values.items() if not k.startswith("dp.")})


def _with_dp(state: StrategyState, clip: float, accountant: PrivacyAccountant) -> StrategyState:
    return StrategyState(state.arrays, {**state.values, CLIP: clip, ACCOUNTANT: json.dumps(accountant.to_dict())})
