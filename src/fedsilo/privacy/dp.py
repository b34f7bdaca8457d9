"""Clipping and Gaussian noise for DP-FedAvg, fixed and adaptive clipping: pure functions over ArrayDicts.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models") makes
the *silo* the unit of privacy: each silo's update (silo model - global model,
:func:`fedsilo.wire.deltas.delta`) is clipped to L2 norm ``C`` over all its arrays together, so no
one silo can move the mean by more than ``C / n``; Gaussian noise with std ``noise_multiplier * C /
n`` on the mean of ``n`` clipped updates then makes each round a Gaussian mechanism that the
accountant (:mod:`fedsilo.privacy.accounting`) can compose over rounds.

With secure aggregation the server only ever sees the sum, so the noise must be added by the
silos themselves (distributed DP): each adds noise of variance ``sigma^2 C^2 / t``, where ``t`` is
the least number of silos that will be in the sum; the sum of ``k >= t`` such noises has variance
at least ``sigma^2 C^2``, the central amount. Calibrating to the least count (e.g. the strategy's
``min_fit_clients``) keeps the guarantee when silos drop out, at the cost of a little extra noise
when they do not.

Adaptive clipping (Andrew et al. NeurIPS 2021, "Differentially Private Learning with Adaptive
Clipping") tracks a quantile of the update norms instead of a hand-tuned ``C``: each silo reports
one bit (was my update's norm <= C?), the server adds Gaussian noise (std ``count_stddev``) to
the count, and moves ``C`` geometrically, ``C <- C * exp(-eta_C * (b - gamma))``, towards the
target quantile ``gamma``. The bit count is a second Gaussian query on the same silos, so the
accountant must see it: the paper's Theorem 1 shows that noise multiplier ``z_delta`` on the
update sum together with std ``sigma_b`` on the bit count (sensitivity 1/2 once bits are centred)
is, for privacy, one Gaussian query with noise multiplier ``z = (z_delta^-2 + (2 sigma_b)^-2)^-1/2``.
So pick the total ``z`` you account for, and give the update sum the larger multiplier
:func:`update_noise_multiplier` returns; record ``z`` (not ``z_delta``) with the accountant.

All math is float64. Randomness comes only from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedsilo.errors import ConfigError, ParameterError
from fedsilo.wire.arrays import ArrayDict


def _check(problems: list[str]) -> None:
    if problems:
        raise ParameterError("invalid differential privacy settings: " + "; ".join(problems), "see privacy.dp")


def _positive(name: str, value: float, problems: list[str], allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        problems.append(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}")


def global_norm(update: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all arrays taken together, as if flattened into one vector."""
    total = 0.0
    for a in update.values():
        flat = np.asarray(a, np.float64).ravel()
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip(update: Mapping[str, np.ndarray], clip_norm: float) -> tuple[ArrayDict, float]:
    """Scale ``update`` so its global L2 norm is at most ``clip_norm``.

    Returns the float64 clipped update and its norm before clipping, so that a caller counting
    unclipped updates (adaptive clipping) asks :func:`is_unclipped` without a second pass.
    """
    problems: list[str] = []
    _positive("clip_norm", clip_norm, problems)
    _check(problems)
    norm = global_norm(update)
    if not math.isfinite(norm):
        raise ValueError("the update has non-finite values; it cannot be clipped")
    scale = 1.0 if is_unclipped(norm, clip_norm) else clip_norm / norm
    return {k: np.asarray(v, np.float64) * scale for k, v in update.items()}, norm


def gaussian_noise_like(like: Mapping[str, np.ndarray], std: float, rng: np.random.Generator) -> ArrayDict:
    """Independent N(0, std^2) noise with the names and shapes of ``like``, in float64.

    Arrays are drawn in the order of ``like``, so one seed gives the same noise everywhere.
    """
    problems: list[str] = []
    _positive("noise std", std, problems, allow_zero=True)
    _check(problems)
    return {k: rng.normal(0.0, std, size=np.shape(v)) if std > 0 else np.zeros(np.shape(v)) for k, v in like.items()}


def add_noise(update: Mapping[str, np.ndarray], std: float, rng: np.random.Generator) -> ArrayDict:
    """``update + N(0, std^2)`` per element, in float64; ``update`` is left as it was."""
    noise = gaussian_noise_like(update, std, rng)
    return {k: np.asarray(v, np.float64) + noise[k] for k, v in update.items()}


def central_noise_std(noise_multiplier: float, clip_norm: float, num_silos: int) -> float:
    """Std of the noise on the *mean* of ``num_silos`` clipped updates: ``z * C / n``.

    The sensitivity of the sum of clipped updates to one silo is ``C``, so the sum gets std
    ``z * C``; dividing by the fixed ``n`` (not a data-dependent weight) keeps that ratio.
    """
    problems: list[str] = []
    _positive("noise_multiplier", noise_multiplier, problems, allow_zero=True)
    _positive("clip_norm", clip_norm, problems)
    if num_silos < 1:
        problems.append(f"num_silos must be >= 1, got {num_silos}")
    _check(problems)
    return noise_multiplier * clip_norm / num_silos


def add_central_noise(
    mean_update: Mapping[str, np.ndarray],
    noise_multiplier: float,
    clip_norm: float,
    num_silos: int,
    rng: np.random.Generator,
) -> ArrayDict:
    """DP-FedAvg's server step: noise the unweighted mean of ``num_silos`` clipped updates."""
    return add_noise(mean_update, central_noise_std(noise_multiplier, clip_norm, num_silos), rng)


def distributed_noise_std(noise_multiplier: float, clip_norm: float, min_silos: int) -> float:
    """Std each silo adds to its clipped update so that a sum over >= ``min_silos`` has ``z * C``.

    ``z * C / sqrt(t)``: variances add, so ``t`` silos give ``z^2 C^2`` in total.
    """
    problems: list[str] = []
    _positive("noise_multiplier", noise_multiplier, problems, allow_zero=True)
    _positive("clip_norm", clip_norm, problems)
    if min_silos < 1:
        problems.append(f"min_silos must be >= 1, got {min_silos}")
    _check(problems)
    return noise_multiplier * clip_norm / math.sqrt(min_silos)


def add_distributed_noise(
    clipped_update: Mapping[str, np.ndarray],
    noise_multiplier: float,
    clip_norm: float,
    min_silos: int,
    rng: np.random.Generator,
) -> ArrayDict:
    """A silo's share of the noise, added before its update is masked for secure aggregation."""
    return add_noise(clipped_update, distributed_noise_std(noise_multiplier, clip_norm, min_silos), rng)


# --- adaptive clipping (Andrew et al. 2021) -------------------------------------------------------


def default_count_stddev(expected_silos: int) -> float:
    """The paper's choice for the bit-count noise: ``m / 20`` for ``m`` silos per round."""
    if expected_silos < 1:
        raise ParameterError(f"expected_silos must be >= 1, got {expected_silos}", "train at least one silo per round")
    return expected_silos / 20.0


def update_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
    """Noise multiplier for the update sum so that updates + bit count account as ``noise_multiplier``.

    ``z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2`` (Andrew et al. 2021, Theorem 1). It needs
    ``2 * count_stddev > z``; otherwise the bit count alone would spend more than the budget.
    """
    problems: list[str] = []
    _positive("noise_multiplier", noise_multiplier, problems)
    _positive("count_stddev", count_stddev, problems)
    _check(problems)
    if 2 * count_stddev <= noise_multiplier:
        raise ConfigError(
            f"adaptive clipping needs count_stddev > noise_multiplier / 2 "
            f"(got count_stddev={count_stddev}, noise_multiplier={noise_multiplier})",
            "raise count_stddev (the paper uses silos per round / 20) or lower noise_multiplier",
        )
    return (noise_multiplier**-2 - (2 * count_stddev) ** -2) ** -0.5


def is_unclipped(norm: float, clip_norm: float) -> bool:
    """The bit a silo reports: was its update within the current bound?"""
    return norm <= clip_norm


def noised_unclipped_fraction(
    unclipped_count: int, expected_silos: int, count_stddev: float, rng: np.random.Generator
) -> float:
    """``(sum of bits + N(0, sigma_b^2)) / m``: the private estimate of the unclipped share.

    Divided by the *expected* number of silos ``m``, not the number that answered, as in the
    paper, so the estimate's sensitivity does not depend on who took part.
    """
    problems: list[str] = []
    _positive("count_stddev", count_stddev, problems, allow_zero=True)
    if expected_silos < 1:
        problems.append(f"expected_silos must be >= 1, got {expected_silos}")
    if unclipped_count < 0:
        problems.append(f"unclipped_count must be >= 0, got {unclipped_count}")
    _check(problems)
    noise = float(rng.normal(0.0, count_stddev)) if count_stddev > 0 else 0.0
    return (unclipped_count + noise) / expected_silos


def adapt_clip_norm(clip_norm: float, unclipped_fraction: float, target_quantile: float, learning_rate: float) -> float:
    """The geometric update ``C * exp(-eta_C * (b - gamma))``.

    Too many unclipped updates (``b > gamma``) shrink ``C``; too few grow it. Geometric steps
    adapt as fast to a norm of 1e-3 as to one of 10, which a linear step cannot.
    """
    problems: list[str] = []
    _positive("clip_norm", clip_norm, problems)
    _positive("learning_rate", learning_rate, problems, allow_zero=True)
    if not 0.0 <= target_quantile <= 1.0:
        problems.append(f"target_quantile must be in [0, 1], got {target_quantile}")
    if not math.isfinite(unclipped_fraction):
        problems.append(f"unclipped_fraction must be finite, got {unclipped_fraction}")
    _check(problems)
    return clip_norm * math.exp(-learning_rate * (unclipped_fraction - target_quantile))
