"""Pure server-optimizer steps: one array in, new arrays out (float64, nothing changed in place).

The server treats ``delta = mean of the silos' models - global model`` as a pseudo-gradient (it
points *downhill*, so steps add it) and applies an optimizer to it:

- heavy-ball momentum, FedAvgM: Hsu, Qi, Brown, "Measuring the Effects of Non-Identical Data
  Distribution for Federated Visual Classification", arXiv:1909.06335, 2019;
- Adagrad, Adam and Yogi, FedAdagrad / FedAdam / FedYogi: Reddi, Charles, Zaheer, Garrett, Rush,
  Konečný, Kumar, McMahan, "Adaptive Federated Optimization", ICLR 2021 (Algorithm 2).

As in Algorithm 2 of Reddi et al. there is no bias correction, and the second moment starts at
``tau**2`` (the paper asks for ``v_{-1} >= tau**2``), see :func:`initial_second_moment`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Rule = Literal["adagrad", "adam", "yogi"]
RULES: tuple[Rule, ...] = ("adagrad", "adam", "yogi")


def heavy_ball(
    x: np.ndarray, delta: np.ndarray, m: np.ndarray, eta: float, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """FedAvgM: ``m' = beta * m + delta``, ``x' = x + eta * m'``.

    With ``beta = 0`` and ``eta = 1`` this is FedAvg exactly; the effective step is ``eta / (1 - beta)``.
    """
    m_new = beta * m + delta
    return x + eta * m_new, m_new


def first_moment(m: np.ndarray, delta: np.ndarray, beta1: float) -> np.ndarray:
    """``m' = beta1 * m + (1 - beta1) * delta`` (all three adaptive rules)."""
    return beta1 * m + (1.0 - beta1) * delta


def second_moment(rule: Rule, v: np.ndarray, delta: np.ndarray, beta2: float) -> np.ndarray:
    """The three rules of Reddi et al. differ only here.

    - adagrad: ``v' = v + delta**2`` (``beta2`` unused)
    - adam:    ``v' = beta2 * v + (1 - beta2) * delta**2``
    - yogi:    ``v' = v - (1 - beta2) * delta**2 * sign(v - delta**2)`` (grows additively, so
      one large round cannot blow the step size up or down as quickly as Adam's)
    """
    d2 = delta * delta
    if rule == "adagrad":
        return v + d2
    if rule == "adam":
        return beta2 * v + (1.0 - beta2) * d2
    if rule == "yogi":
        return v - (1.0 - beta2) * d2 * np.sign(v - d2)
    raise ValueError(f"unknown rule {rule!r} (use one of {', '.join(RULES)})")


def adaptive_step(
    rule: Rule,
    x: np.ndarray,
    delta: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    eta: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One FedAdagrad / FedAdam / FedYogi step: ``x' = x + eta * m' / (sqrt(v') + tau)``.

    Returns ``(x', m', v')``.
    """
    m_new = first_moment(m, delta, beta1)
    v_new = second_moment(rule, v, delta, beta2)
    return x + eta * m_new / (np.sqrt(v_new) + tau), m_new, v_new


def initial_second_moment(shape: tuple[int, ...], tau: float) -> np.ndarray:
    """``v_{-1} = tau**2``: the smallest start Algorithm 2 allows, so the first steps are not damped."""
    return np.full(shape, tau * tau)
