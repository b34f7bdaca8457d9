"""DP-FedAvg math by hand: global norms, clipping, noise stds (central and distributed), adaptive clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsilo.errors import ConfigError
from fedsilo.privacy import dp


def update() -> dict[str, np.ndarray]:
    # Global norm sqrt(9 + 16 + 144) = 13; per-array norms 5 and 12 (so per-array clipping would differ).
    return {"a": np.array([3.0, 4.0], np.float32), "b": np.array([[12.0]], np.float32)}


def test_global_norm_spans_all_arrays() -> None:
    assert dp.global_norm(update()) == 13.0
    assert dp.global_norm({"z": np.zeros(3)}) == 0.0


def test_clip_scales_every_array_by_one_factor() -> None:
    original = update()
    clipped, norm = dp.clip(original, 6.5)
    assert norm == 13.0
    assert clipped["a"].tolist() == [1.5, 2.0]
    assert clipped["b"].tolist() == [[6.0]]
    assert clipped["a"].dtype == np.float64
    assert math.isclose(dp.global_norm(clipped), 6.5)
    assert original["a"].tolist() == [3.0, 4.0]  # the caller's arrays are untouched


def test_clip_leaves_an_update_within_the_bound_as_it_is() -> None:
    clipped, norm = dp.clip(update(), 13.0)
    assert norm == 13.0
    assert clipped["b"].tolist() == [[12.0]]
    clipped, norm = dp.clip(update(), 26.0)
    assert norm == 13.0 and dp.global_norm(clipped) == 13.0


def test_clip_refuses_a_bad_bound_and_non_finite_updates() -> None:
    with pytest.raises(ConfigError, match="clip_norm must be > 0"):
        dp.clip(update(), 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        dp.clip({"a": np.array([np.nan])}, 1.0)


def test_central_noise_std_is_z_c_over_n() -> None:
    assert math.isclose(dp.central_noise_std(1.2, 0.5, 3), 0.2)
    assert dp.central_noise_std(0.0, 0.5, 3) == 0.0


def test_settings_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as e:
        dp.central_noise_std(-1.0, 0.0, 0)
    message = e.value.message
    assert "noise_multiplier" in message and "clip_norm" in message and "num_silos" in message


def test_central_noise_has_the_calibrated_std() -> None:
    zeros = {"w": np.zeros((400, 500))}
    noised = dp.add_central_noise(zeros, noise_multiplier=1.2, clip_norm=0.5, num_silos=3, rng=np.random.default_rng(7))
    # 200k draws: the sample std is within ~0.3% of 0.2 (4 standard errors), the mean within 4 * 0.2 / sqrt(n).
    assert abs(noised["w"].std() - 0.2) < 0.2 * 0.006
    assert abs(noised["w"].mean()) < 4 * 0.2 / math.sqrt(200_000)


def test_noise_is_added_to_the_update_and_reproducible_from_the_seed() -> None:
    base = {"a": np.array([1.0, 2.0]), "b": np.array([[3.0]])}
    one = dp.add_noise(base, 0.1, np.random.default_rng(3))
    two = dp.add_noise(base, 0.1, np.random.default_rng(3))
    expected_noise = np.random.default_rng(3).normal(0.0, 0.1, size=2)
    assert np.array_equal(one["a"], two["a"]) and np.array_equal(one["b"], two["b"])
    assert np.allclose(one["a"] - base["a"], expected_noise)  # arrays drawn in order: 'a' first
    assert base["a"].tolist() == [1.0, 2.0]
    assert dp.add_noise(base, 0.0, np.random.default_rng(3))["a"].tolist() == [1.0, 2.0]


def test_distributed_noise_sums_to_the_central_amount() -> None:
    z, c, silos = 1.2, 0.5, 4
    per_silo = dp.distributed_noise_std(z, c, silos)
    assert math.isclose(per_silo, z * c / 2)  # z C / sqrt(4)
    zeros = {"w": np.zeros(200_000)}
    shares = [dp.add_distributed_noise(zeros, z, c, silos, np.random.default_rng(100 + i))["w"] for i in range(silos)]
    total = np.sum(shares, axis=0)
    assert abs(total.std() - z * c) < z * c * 0.006  # the sum carries the full z * C
    mean = total / silos
    assert abs(mean.std() - dp.central_noise_std(z, c, silos)) < dp.central_noise_std(z, c, silos) * 0.006


def test_distributed_noise_calibrated_to_fewer_silos_keeps_the_guarantee_when_more_come() -> None:
    # Calibrated for at least 2 of 3 silos: 3 shares give more variance than needed, never less.
    per_silo = dp.distributed_noise_std(1.0, 1.0, 2)
    assert math.isclose(2 * per_silo**2, 1.0)
    assert 3 * per_silo**2 > 1.0


# --- adaptive clipping ---------------------------------------------------------------------------


def test_geometric_clip_update_by_hand() -> None:
    # Too many unclipped (0.8 > 0.5): C shrinks by exp(-0.2 * 0.3); too few: it grows by exp(+0.2 * 0.3).
    assert math.isclose(dp.adapt_clip_norm(1.0, 0.8, 0.5, 0.2), math.exp(-0.06))
    assert math.isclose(dp.adapt_clip_norm(2.0, 0.2, 0.5, 0.2), 2.0 * math.exp(0.06))
    assert dp.adapt_clip_norm(2.0, 0.5, 0.5, 0.2) == 2.0


def test_noised_fraction_divides_by_the_expected_silos() -> None:
    assert dp.noised_unclipped_fraction(3, 4, 0.0, np.random.default_rng(0)) == 0.75
    draws = [dp.noised_unclipped_fraction(30, 100, 5.0, np.random.default_rng(i)) for i in range(4000)]
    assert abs(np.mean(draws) - 0.3) < 4 * 0.05 / math.sqrt(4000)
    assert abs(np.std(draws) - 0.05) < 0.05 * 0.05  # sigma_b / m = 5 / 100


def test_is_unclipped_includes_the_bound_itself() -> None:
    assert dp.is_unclipped(1.0, 1.0) and not dp.is_unclipped(1.0 + 1e-12, 1.0)


def test_update_noise_multiplier_follows_theorem_1() -> None:
    # z = 1, sigma_b = 1: z_delta = (1 - 1/4)^-1/2.
    z_delta = dp.update_noise_multiplier(1.0, 1.0)
    assert math.isclose(z_delta, 1 / math.sqrt(0.75))
    assert math.isclose((z_delta**-2 + (2 * 1.0) ** -2) ** -0.5, 1.0)
    assert dp.default_count_stddev(20) == 1.0


def test_update_noise_multiplier_accounts_like_the_single_query() -> None:
    """The two Gaussian queries (updates at z_delta, bit count at 2 sigma_b) compose to one at z (RDP)."""
    dp_accounting = pytest.importorskip("dp_accounting")
    z, sigma_b = 1.1, 2.5
    both = dp_accounting.rdp.RdpAccountant()
    both.compose(
        dp_accounting.ComposedDpEvent(
            [
                dp_accounting.GaussianDpEvent(dp.update_noise_multiplier(z, sigma_b)),
                dp_accounting.GaussianDpEvent(2 * sigma_b),
            ]
        )
    )
    single = dp_accounting.rdp.RdpAccountant()
    single.compose(dp_accounting.GaussianDpEvent(z))
    assert math.isclose(both.get_epsilon(1e-5), single.get_epsilon(1e-5), rel_tol=1e-9)


def test_update_noise_multiplier_refuses_too_little_count_noise() -> None:
    with pytest.raises(ConfigError, match="count_stddev > noise_multiplier / 2") as e:
        dp.update_noise_multiplier(1.0, 0.5)
    assert e.value.fix and "silos per round / 20" in e.value.fix


def test_adaptive_clipping_tracks_the_target_quantile() -> None:
    """Andrew et al.'s loop on fixed update norms: C settles near their median (gamma = 0.5)."""
    rng = np.random.default_rng(0)
    silos = 100
    norms = rng.lognormal(mean=0.0, sigma=0.5, size=silos)  # median ~ 1
    clip_norm = 0.1  # the paper's initial C, ten times too small
    for _ in range(200):
        count = sum(dp.is_unclipped(float(n), clip_norm) for n in norms)
        fraction = dp.noised_unclipped_fraction(count, silos, dp.default_count_stddev(silos), rng)
        clip_norm = dp.adapt_clip_norm(clip_norm, fraction, target_quantile=0.5, learning_rate=0.2)
    unclipped_share = float(np.mean(norms <= clip_norm))
    assert 0.4 <= unclipped_share <= 0.6
    assert abs(clip_norm - float(np.median(norms))) < 0.15 * float(np.median(norms))
