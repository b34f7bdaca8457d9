"""Central DP around a mean strategy: clipping, uniform weights, noise, adaptive C, the accountant."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedsilo.errors import ConfigError
from fedsilo.privacy.accounting import PrivacyAccountant, PrivacyEvent
from fedsilo.strategy.base import Sampling, SpendsPrivacy, StrategyState
from fedsilo.strategy.central_dp import ACCOUNTANT, CLIP, NOISE_STREAM, CentralDP
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.strategy.fedopt import FedOpt
from fedsilo.wire.messages import FitRes

GLOBAL = {"w": np.array([1.0, 1.0], np.float32), "b": np.array([0.0], np.float32)}


def updates() -> list[FitRes]:
    # deltas: a = (3, 4, 0) norm 5 -> clipped to 2 = (1.2, 1.6, 0); b = (0, 0, 1) norm 1 -> kept
    return [
        FitRes("a", {"w": np.array([4.0, 5.0], np.float32), "b": np.array([0.0], np.float32)}, 1000),
        FitRes("b", {"w": np.array([1.0, 1.0], np.float32), "b": np.array([1.0], np.float32)}, 1),
    ]


def run_round(strategy: CentralDP, rnd: int = 1, state: StrategyState | None = None):
    state = state if state is not None else strategy.initial_state(GLOBAL)
    agg = strategy.begin(rnd, GLOBAL, state)
    for u in updates():
        agg.add(u)
    return agg.finish()


def test_fixed_clipping_uniform_weights_and_seeded_noise_by_hand() -> None:
    s = CentralDP(FedAvg(), noise_multiplier=0.5, clip_norm=2.0, expected_silos=2, sampling_rate=1.0, seed=3)
    params, state = run_round(s)
    # mean of clipped deltas, uniform (num_examples ignored): ((1.2, 1.6, 0) + (0, 0, 1)) / 2
    # noise std z*C/n = 0.5*2/2 = 0.5, drawn for w then b from default_rng([seed, round, stream])
    rng = np.random.default_rng([3, 1, NOISE_STREAM])
    noise_w, noise_b = rng.normal(0, 0.5, size=2), rng.normal(0, 0.5, size=1)
    np.testing.assert_allclose(params["w"], np.float32(np.array([1.6, 1.8]) + noise_w), rtol=1e-6)
    np.testing.assert_allclose(params["b"], np.float32(np.array([0.5]) + noise_b), rtol=1e-6)
    assert params["w"].dtype == np.float32
    assert state.values[CLIP] == 2.0  # fixed clipping keeps C
    assert isinstance(s, SpendsPrivacy)


def test_denominator_is_the_expected_silo_count_not_the_replies() -> None:
    s = CentralDP(FedAvg(), noise_multiplier=1e-12, clip_norm=2.0, expected_silos=4, sampling_rate=0.5)
    params, _ = run_round(s)
    np.testing.assert_allclose(params["w"], [1.0 + 1.2 / 4, 1.0 + 1.6 / 4], rtol=1e-6)
    np.testing.assert_allclose(params["b"], [0.25], atol=1e-9)


def test_noise_is_reproducible_per_round_and_differs_between_rounds() -> None:
    s = CentralDP(FedAvg(), noise_multiplier=1.0, clip_norm=1.0, expected_silos=2, sampling_rate=1.0, seed=0)
    a, _ = run_round(s, rnd=1)
    b, _ = run_round(s, rnd=1)
    c, _ = run_round(s, rnd=2)
    np.testing.assert_array_equal(a["w"], b["w"])
    assert not np.array_equal(a["w"], c["w"])


def test_server_optimizer_steps_on_the_private_mean() -> None:
    """FedAvgM with momentum 0 and eta 1 is plain FedAvg: same result as the FedAvg inner strategy."""
    kw = dict(noise_multiplier=0.3, clip_norm=2.0, expected_silos=2, sampling_rate=1.0, seed=5)
    plain, _ = run_round(CentralDP(FedAvg(), **kw))
    opt = CentralDP(FedOpt("fedavgm", Sampling(), eta=1.0, beta1=0.0), **kw)
    stepped, state = run_round(opt)
    for k in plain:
        np.testing.assert_allclose(stepped[k], plain[k], rtol=1e-5, atol=1e-6)
    assert any(k.startswith("m/") for k in state.arrays)  # the inner strategy's own state is kept


def test_accountant_records_one_event_per_round_and_reports_its_epsilon() -> None:
    s = CentralDP(FedAvg(), 1.1, 1.0, expected_silos=2, sampling_rate=0.5, delta=1e-5)
    _, state = run_round(s, 1)
    _, state = run_round(s, 2, state)
    acc = PrivacyAccountant.from_dict(json.loads(state.values[ACCOUNTANT]))
    assert acc.events == (PrivacyEvent(1.1, 0.5, 2),)
    expected = PrivacyAccountant().record(PrivacyEvent(1.1, 0.5, 2)).epsilon(1e-5)
    assert s.round_metrics(state) == {"epsilon": expected, "delta": 1e-5, "noise_multiplier": 1.1, "clip_norm": 1.0}


def test_target_epsilon_stops_before_it_is_exceeded() -> None:
    event = PrivacyEvent(1.0, 1.0, 1)
    two, three = (PrivacyAccountant().record(PrivacyEvent(1.0, 1.0, n)).epsilon(1e-5) for n in (2, 3))
    target = (two + three) / 2  # two rounds fit, a third would not
    s = CentralDP(FedAvg(), 1.0, 1.0, expected_silos=2, sampling_rate=event.sampling_rate, target_epsilon=target)
    state = s.initial_state(GLOBAL)
    ran = 0
    for rnd in range(1, 6):
        if s.stop_reason(rnd, state) is not None:
            break
        _, state = run_round(s, rnd, state)
        ran += 1
    assert ran == 2
    assert s.round_metrics(state)["epsilon"] == pytest.approx(two) and two <= target
    reason = s.stop_reason(3, state)
    assert reason is not None and "before round 3" in reason and f"{target:g}" in reason


def test_adaptive_clipping_moves_c_by_the_noised_unclipped_count() -> None:
    s = CentralDP(
        FedAvg(), 1.0, 2.0, expected_silos=2, sampling_rate=1.0, adaptive=True,
        target_quantile=0.5, clip_learning_rate=0.2, count_stddev=1.0, seed=9,
    )  # fmt: skip
    z_delta = (1.0**-2 - (2 * 1.0) ** -2) ** -0.5  # Andrew et al., Theorem 1
    _, state = run_round(s)
    rng = np.random.default_rng([9, 1, NOISE_STREAM])
    rng.normal(0, z_delta * 2.0 / 2, size=2), rng.normal(0, z_delta * 2.0 / 2, size=1)  # the model's noise first
    fraction = (1 + rng.normal(0.0, 1.0)) / 2  # one of two updates (b, norm 1) was within C = 2
    assert state.values[CLIP] == pytest.approx(2.0 * math.exp(-0.2 * (fraction - 0.5)))
    assert s.round_metrics(state)["noise_multiplier"] == 1.0  # the accountant sees the combined z


def test_adaptive_clipping_refuses_a_count_noise_that_spends_the_whole_budget() -> None:
    with pytest.raises(ConfigError, match="count_stddev"):
        CentralDP(FedAvg(), 2.0, 1.0, expected_silos=3, sampling_rate=1.0, adaptive=True, count_stddev=0.5)


def test_with_secure_aggregation_the_server_adds_no_noise_and_still_accounts_the_round() -> None:
    """The silos clipped and noised already: the secure mean goes to the inner strategy as it is."""
    s = CentralDP(FedAvg(), noise_multiplier=0.8, clip_norm=2.0, expected_silos=3, sampling_rate=0.5, distributed=True)
    state = s.initial_state(GLOBAL)
    agg = s.begin(1, GLOBAL, state)
    secure_mean = {"w": np.array([1.25, 0.5], np.float32), "b": np.array([0.125], np.float32)}
    agg.add(FitRes("secure-aggregation", secure_mean, 60))
    assert agg.count == 1
    params, state = agg.finish()
    for k, v in secure_mean.items():
        np.testing.assert_array_equal(params[k], v)  # no clipping, no noise on top
    assert float(state.values[CLIP]) == 2.0
    spent = PrivacyAccountant.from_dict(json.loads(str(state.values[ACCOUNTANT])))
    assert spent.epsilon(1e-5) == PrivacyAccountant().record(PrivacyEvent(0.8, 0.5, 1)).epsilon(1e-5)
