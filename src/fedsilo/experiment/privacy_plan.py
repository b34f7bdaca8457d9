"""From the ``privacy:`` section to the strategy a run uses, and the checks ``validate`` makes of it.

Central DP wraps the configured strategy in :class:`~fedsilo.strategy.central_dp.CentralDP`. The
accountant's sampling model: each round the server samples ``n`` of ``N`` silos (``fraction_fit``,
at least ``min_fit_clients``) without replacement; it is accounted as Poisson sampling at rate
``q = n / N``, the usual approximation (TFF and Opacus make it too), exact when every silo trains
every round (``q = 1``), and ``n`` is the mean's fixed denominator.
"""

from __future__ import annotations

import math

from fedsilo.errors import FedsiloError
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.privacy import dp
from fedsilo.privacy.accounting import PrivacyAccountant, PrivacyEvent
from fedsilo.server.registry import sample_count
from fedsilo.strategy.base import Strategy
from fedsilo.strategy.central_dp import CentralDP


def expected_silos(config: ExperimentConfig) -> int:
    """How many silos train per round when all are available: the mean's denominator."""
    s = config.strategy
    return sample_count(len(config.silos), s.fraction_fit, s.min_fit_clients)


def with_privacy(config: ExperimentConfig, strategy: Strategy) -> Strategy:
    """``strategy`` wrapped in central DP when ``privacy.dp`` is set (robust ones are refused by the config)."""
    d = config.privacy.dp
    if d is None:
        return strategy
    n = expected_silos(config)
    return CentralDP(
        strategy,
        d.noise_multiplier,
        d.clip_norm,
        expected_silos=n,
        sampling_rate=n / len(config.silos),
        delta=d.delta,
        target_epsilon=d.target_epsilon,
        adaptive=d.adaptive,
        target_quantile=d.target_quantile,
        clip_learning_rate=d.clip_learning_rate,
        count_stddev=d.count_stddev,
        accountant=d.accountant,
        seed=config.seed,
        distributed=config.privacy.secure_aggregation is not None,
    )


def projected_epsilon(config: ExperimentConfig) -> tuple[float, int] | None:
    """Central DP's epsilon after the configured rounds, and the rounds a target epsilon allows."""
    d = config.privacy.dp
    if d is None:
        return None
    event = PrivacyEvent(d.noise_multiplier, expected_silos(config) / len(config.silos), 1)
    acc = PrivacyAccountant(d.accountant)
    epsilon = acc.record(PrivacyEvent(event.noise_multiplier, event.sampling_rate, config.rounds)).epsilon(d.delta)
    allowed = (
        config.rounds if d.target_epsilon is None else acc.rounds_left(d.target_epsilon, d.delta, event, config.rounds)
    )
    return epsilon, allowed


def privacy_problems(config: ExperimentConfig, framework: str | None) -> list[str]:
    """What cannot work: local DP on a task that is not PyTorch, DP settings the math refuses."""
    problems = []
    if config.privacy.local_dp is not None and framework not in (None, "torch"):
        problems.append(
            f"privacy.local_dp trains with Opacus (PyTorch) but the task is {framework} -> remove privacy.local_dp "
            "or use privacy.dp (central DP works with every task)"
        )
    if config.privacy.dp is not None:
        d = config.privacy.dp
        try:
            if d.adaptive:
                stddev = d.count_stddev or dp.default_count_stddev(expected_silos(config))
                dp.update_noise_multiplier(d.noise_multiplier, stddev)
            projected = projected_epsilon(config)
        except FedsiloError as exc:
            return [*problems, f"privacy.dp: {exc.one_line()}"]
        if projected is not None and not math.isfinite(projected[0]):
            problems.append("privacy.dp: epsilon would be infinite -> raise noise_multiplier above 0")
    return problems
