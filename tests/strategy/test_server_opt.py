"""strategy/server_opt.py: each pure step against arithmetic written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsilo.strategy.server_opt import (
    adaptive_step,
    first_moment,
    heavy_ball,
    initial_second_moment,
    second_moment,
)


def a(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_heavy_ball_by_hand() -> None:
    x, delta, m = a(1.0, -2.0), a(0.5, 1.0), a(0.2, -0.4)
    new_x, new_m = heavy_ball(x, delta, m, eta=0.5, beta=0.9)
    # m' = 0.9 * [0.2, -0.4] + [0.5, 1.0] = [0.18 + 0.5, -0.36 + 1.0] = [0.68, 0.64]
    # x' = [1, -2] + 0.5 * [0.68, 0.64] = [1.34, -1.68]
    np.testing.assert_allclose(new_m, [0.68, 0.64], rtol=1e-12)
    np.testing.assert_allclose(new_x, [1.34, -1.68], rtol=1e-12)
    np.testing.assert_array_equal(m, [0.2, -0.4])  # inputs untouched


def test_heavy_ball_without_momentum_at_rate_one_lands_on_the_mean() -> None:
    # x + delta is the silos' mean itself: FedAvg.
    new_x, _ = heavy_ball(a(3.0), a(-1.25), a(7.0), eta=1.0, beta=0.0)
    np.testing.assert_allclose(new_x, [1.75])


def test_first_moment_by_hand() -> None:
    # 0.75 * [0.4, -0.8] + 0.25 * [2.0, 0.0] = [0.3 + 0.5, -0.6 + 0] = [0.8, -0.6]
    np.testing.assert_allclose(first_moment(a(0.4, -0.8), a(2.0, 0.0), 0.75), [0.8, -0.6], rtol=1e-12)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # delta^2 = [0.09, 0.01]; v = [0.04, 0.25]; beta2 = 0.9
        ("adagrad", [0.04 + 0.09, 0.25 + 0.01]),  # [0.13, 0.26]
        ("adam", [0.036 + 0.009, 0.225 + 0.001]),  # 0.9 v + 0.1 delta^2 = [0.045, 0.226]
        # sign(v - delta^2) = sign([-0.05, 0.24]) = [-1, +1]: the first grows, the second shrinks
        ("yogi", [0.04 + 0.009, 0.25 - 0.001]),  # [0.049, 0.249]
    ],
)
def test_second_moment_rules_by_hand(rule: str, expected: list[float]) -> None:
    v, delta = a(0.04, 0.25), a(0.3, -0.1)
    np.testing.assert_allclose(second_moment(rule, v, delta, 0.9), expected, rtol=1e-12)  # type: ignore[arg-type]


def test_yogi_leaves_v_alone_when_it_equals_delta_squared() -> None:
    # sign(0.09 - 0.3^2) = sign(0) = 0
    np.testing.assert_allclose(second_moment("yogi", a(0.09), a(0.3), 0.5), [0.09])


def test_unknown_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown rule 'rmsprop'"):
        second_moment("rmsprop", a(0.0), a(0.0), 0.5)  # type: ignore[arg-type]


def test_adam_step_by_hand() -> None:
    x, delta, m, v = a(1.0, 0.0), a(0.2, -0.6), a(0.1, 0.0), a(0.04, 0.0)
    new_x, new_m, new_v = adaptive_step("adam", x, delta, m, v, eta=0.1, beta1=0.5, beta2=0.9, tau=0.05)
    # m' = 0.5 * [0.1, 0] + 0.5 * [0.2, -0.6] = [0.15, -0.3]
    # v' = 0.9 * [0.04, 0] + 0.1 * [0.04, 0.36] = [0.04, 0.036]
    # x' = x + 0.1 * m' / (sqrt(v') + 0.05): first 1 + 0.1 * 0.15 / (0.2 + 0.05) = 1.06
    np.testing.assert_allclose(new_m, [0.15, -0.3], rtol=1e-12)
    np.testing.assert_allclose(new_v, [0.04, 0.036], rtol=1e-12)
    np.testing.assert_allclose(new_x, [1.06, 0.1 * -0.3 / (math.sqrt(0.036) + 0.05)], rtol=1e-12)


def test_adagrad_and_yogi_steps_by_hand() -> None:
    x, delta, m = a(2.0), a(0.3), a(0.2)
    # adagrad: m' = 0.5*0.2 + 0.5*0.3 = 0.25; v' = 0.07 + 0.09 = 0.16; x' = 2 + 0.2*0.25/(0.4+0.1) = 2.1
    new_x, new_m, new_v = adaptive_step("adagrad", x, delta, m, a(0.07), eta=0.2, beta1=0.5, beta2=0.9, tau=0.1)
    np.testing.assert_allclose([new_x[0], new_m[0], new_v[0]], [2.1, 0.25, 0.16], rtol=1e-12)
    # yogi with delta^2 = 0.25, v = 0.06 < 0.25 so v grows: v' = 0.06 + 0.4*0.25 = 0.16 (beta2 = 0.6)
    # m' = 0.5*0.2 + 0.5*0.5 = 0.35; x' = 2 + 0.2*0.35/(0.4+0.1) = 2.14
    new_x, new_m, new_v = adaptive_step("yogi", x, a(0.5), m, a(0.06), eta=0.2, beta1=0.5, beta2=0.6, tau=0.1)
    np.testing.assert_allclose([new_x[0], new_m[0], new_v[0]], [2.14, 0.35, 0.16], rtol=1e-12)


def test_second_moment_starts_at_tau_squared() -> None:
    v = initial_second_moment((2, 3), 1e-3)
    assert v.shape == (2, 3)
    np.testing.assert_allclose(v, 1e-6)
