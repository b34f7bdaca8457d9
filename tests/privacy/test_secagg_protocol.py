"""privacy/secagg/{server,silo,simulate}.py: whole rounds, dropouts at every step, tampering, uniformity."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from fedsilo.errors import SecAggError
from fedsilo.privacy.secagg import FixedPoint, layout_of, new_round, server, silo, simulate_round
from fedsilo.privacy.secagg.encoding import decode, encode, layout_size
from fedsilo.privacy.secagg.messages import SecAggConfig
from fedsilo.privacy.secagg.prg import expand
from fedsilo.privacy.secagg.simulate import STEPS
from fedsilo.wire.arrays import ArrayDict


def make_updates(n: int, seed: int = 0, size: int = 7) -> dict[int, ArrayDict]:
    """Unequal, signed float32 updates: silo u's values are scaled by u and shifted by (-1)^u."""
    rng = np.random.default_rng(seed)
    return {
        u: {
            "w": (rng.normal(size=(size, 3)) * u + (-1) ** u).astype(np.float32),
            "b": (rng.normal(size=4) * 0.01 * u).astype(np.float32),
            "scale": np.array([float(u) - 3.5], dtype=np.float32),
        }
        for u in range(1, n + 1)
    }


def exact_sum(updates: dict[int, ArrayDict], silos: Sequence[int], config: SecAggConfig) -> ArrayDict:
    """The sum of the encoded updates, decoded: what secure aggregation must return bit for bit."""
    total = np.zeros(layout_size(config.layout), dtype=config.encoding.dtype)
    for u in silos:
        total += encode(updates[u], config.layout, config.encoding)[0]
    return decode(total, config.layout, config.encoding)


def assert_same(a: ArrayDict, b: ArrayDict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def config_for(updates: dict[int, ArrayDict], threshold: int | None = None, **kw: object) -> SecAggConfig:
    return new_round(list(updates), layout_of(updates[1]), np.random.default_rng(11), threshold=threshold, **kw)  # type: ignore[arg-type]


def test_unmasked_sum_equals_the_plain_sum_up_to_the_fixed_point_precision() -> None:
    updates = make_updates(5)
    config = config_for(updates, encoding=FixedPoint(clip=64.0, frac_bits=16))
    result = simulate_round(config, updates).result
    assert result.survivors == (1, 2, 3, 4, 5) and result.dropped == () and result.excluded == ()
    for name in ("w", "b", "scale"):
        plain = sum(updates[u][name].astype(np.float64) for u in updates)
        assert result.total[name].shape == plain.shape
        assert np.abs(result.total[name] - plain).max() <= 5 * config.encoding.resolution / 2
    assert result.total["scale"].tolist() == [-2.5]  # (-2.5) + (-1.5) + (-0.5) + 0.5 + 1.5, exact in fixed point
    assert_same(result.total, exact_sum(updates, range(1, 6), config))


def test_two_of_six_dropping_after_their_masked_inputs_still_give_the_exact_sum() -> None:
    updates = make_updates(6, seed=1)
    config = config_for(updates, threshold=4)
    run = simulate_round(config, updates, drop={2: "unmask", 5: "unmask"})
    assert run.result.survivors == (1, 2, 3, 4, 5, 6)  # their inputs arrived, so they are in the sum
    assert_same(run.result.total, exact_sum(updates, range(1, 7), config))


def test_two_of_six_dropping_before_their_masked_inputs_give_the_survivors_sum_exactly() -> None:
    updates = make_updates(6, seed=2)
    config = config_for(updates, threshold=4)
    result = simulate_round(config, updates, drop={2: "masked_input", 5: "masked_input"}).result
    assert result.survivors == (1, 3, 4, 6) and result.dropped == (2, 5) and result.excluded == ()
    assert_same(result.total, exact_sum(updates, [1, 3, 4, 6], config))


@pytest.mark.parametrize("step", ["advertise", "share_keys"])
def test_dropping_at_the_early_steps_leaves_those_silos_out(step: str) -> None:
    updates = make_updates(6, seed=3)
    config = config_for(updates, threshold=4)
    result = simulate_round(config, updates, drop={1: step, 6: step}).result
    assert result.survivors == (2, 3, 4, 5) and result.dropped == ()  # never dealt shares: nothing to unmask
    assert_same(result.total, exact_sum(updates, [2, 3, 4, 5], config))


def test_dropouts_spread_over_every_step_at_once() -> None:
    updates = make_updates(8, seed=4)
    config = config_for(updates, threshold=4)
    drop = {1: "advertise", 3: "share_keys", 5: "masked_input", 8: "unmask"}
    result = simulate_round(config, updates, drop=drop).result
    assert result.survivors == (2, 4, 6, 7, 8) and result.dropped == (5,)
    assert_same(result.total, exact_sum(updates, [2, 4, 6, 7, 8], config))


@pytest.mark.parametrize("step", STEPS)
def test_below_the_threshold_the_round_fails_cleanly_at_every_step(step: str) -> None:
    updates = make_updates(6, seed=5)
    config = config_for(updates, threshold=4)
    with pytest.raises(SecAggError) as info:
        simulate_round(config, updates, drop={1: step, 2: step, 3: step})
    assert "fewer than the threshold t=4" in info.value.message or "fewer than t=4" in info.value.message
    assert "model is unchanged" in info.value.message
    assert info.value.exit_code == SecAggError.exit_code


def test_the_sum_is_the_same_whatever_the_keys_and_masks() -> None:
    updates = make_updates(4, seed=6)
    config = config_for(updates, threshold=3)
    first = simulate_round(config, updates, drop={4: "masked_input"}).result
    second = simulate_round(config, updates, drop={4: "masked_input"}).result
    assert_same(first.total, second.total)  # fresh keys, seeds and masks each time; the same sum
    assert config == config_for(updates, threshold=3)  # the public settings are a function of the rng


def _chi_square_uniform_bytes(values: np.ndarray) -> tuple[float, float]:
    """Chi-square statistics of the top and bottom byte of uint64 values against 256 equal bins."""
    stats = []
    for byte in (values >> np.uint64(56), values & np.uint64(0xFF)):
        counts = np.bincount(byte.astype(np.int64), minlength=256)
        expected = values.size / 256
        stats.append(float(((counts - expected) ** 2 / expected).sum()))
    return stats[0], stats[1]


def _chi_square_critical(df: int, z: float) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 4.75: one-sided p = 1e-6)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_one_silos_masked_input_is_uniform_over_the_ring_while_its_encoding_is_not() -> None:
    n_values = 60_000
    updates = {u: {"w": np.random.default_rng(u).normal(size=n_values).astype(np.float32)} for u in (1, 2, 3)}
    config = new_round([1, 2, 3], layout_of(updates[1]), np.random.default_rng(0), threshold=2)
    srv = server.start(config)
    states, adverts = {}, []
    for u in (1, 2, 3):
        states[u], msg = silo.advertise(config, u)
        adverts.append(msg)
    srv, directory = server.collect_keys(srv, adverts)
    dealt = []
    for u in (1, 2, 3):
        states[u], msg = silo.share_keys(states[u], directory)
        dealt.append(msg)
    srv, relayed = server.relay_shares(srv, dealt)
    states[1], masked = silo.masked_input(states[1], relayed[1], updates[1])
    critical = _chi_square_critical(255, 4.75)  # about 377
    top, bottom = _chi_square_uniform_bytes(masked.vector)
    assert top < critical and bottom < critical, (top, bottom, critical)
    raw = encode(updates[1], config.layout, config.encoding)[0]
    raw_top, _ = _chi_square_uniform_bytes(raw)
    assert raw_top > 100 * critical  # the encoding alone sits at the two ends of the ring
    # Even a server that knew both pairwise masks would still face the self mask: also uniform.
    pairwise_removed = masked.vector.copy()
    for v in (2, 3):
        seed = silo.pairwise_seed(states[1].s_private, directory.keys[v][1], config)
        pairwise_removed -= expand(seed, n_values)
    assert max(_chi_square_uniform_bytes(pairwise_removed)) < critical


def test_secagg_plus_masks_with_k_neighbours_and_recovers_the_exact_sum() -> None:
    updates = make_updates(16, seed=7, size=3)
    config = config_for(updates, neighbours=4)
    assert config.threshold == 3  # a majority of the 5 holders (4 neighbours and itself)
    run = simulate_round(config, updates, drop={2: "masked_input", 9: "masked_input", 14: "unmask"})
    survivors = [u for u in range(1, 17) if u not in (2, 9)]
    assert run.result.survivors == tuple(survivors) and run.result.dropped == (2, 9)
    assert_same(run.result.total, exact_sum(updates, survivors, config))
    full = simulate_round(config_for(updates), updates)
    assert max(run.sent_bytes.values()) < min(full.sent_bytes.values())  # fewer shares to send


def test_new_round_reports_every_bad_setting_at_once() -> None:
    layout = layout_of({"w": np.zeros(3)})
    with pytest.raises(SecAggError) as info:
        new_round([1, 1], layout, np.random.default_rng(0), threshold=5, neighbours=3)
    msg = info.value.message
    assert "distinct" in msg and "at least 3" in msg and "neighbours=3" in msg and "threshold=5" in msg
    with pytest.raises(SecAggError, match="overflow"):
        new_round(range(1, 9), layout, np.random.default_rng(0), encoding=FixedPoint(clip=2.0**20, frac_bits=40))
    assert new_round(range(1, 7), layout, np.random.default_rng(0)).threshold == 4  # default: a majority


def test_a_32_bit_ring_round_recovers_the_exact_sum_with_dropouts() -> None:
    updates = make_updates(6, seed=8)
    config = config_for(updates, threshold=4, encoding=FixedPoint(clip=64.0, frac_bits=16, ring_bits=32))
    run = simulate_round(config, updates, drop={3: "masked_input", 6: "unmask"})
    assert run.result.survivors == (1, 2, 4, 5, 6)
    assert_same(run.result.total, exact_sum(updates, [1, 2, 4, 5, 6], config))
    full = simulate_round(config_for(updates, threshold=4), updates)
    size = layout_size(config.layout)
    assert full.sent_bytes[1] - run.sent_bytes[1] == 4 * size  # 4 bytes less per value
