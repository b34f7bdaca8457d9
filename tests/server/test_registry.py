"""server/registry.py: how many silos take part, which ones (seeded), and bounded waits."""

from __future__ import annotations

import random
import time

import pytest

from fedsilo.errors import RoundFailed
from fedsilo.server.registry import EVALUATE, FIT, round_rng, sample_count, sample_silos, wait_for_silos

NAMES = [f"silo{i:02d}" for i in range(10)]


@pytest.mark.parametrize(
    ("available", "fraction", "minimum", "expected"),
    [
        (10, 1.0, 1, 10),
        (10, 0.5, 1, 5),
        (10, 0.3, 1, 3),
        (10, 0.1, 3, 3),  # the minimum wins over a small fraction
        (10, 0.5, 8, 8),
        (10, 0.8, 2, 8),  # the fraction wins over a small minimum
        (3, 0.5, 1, 2),  # a fraction of silos is rounded up, never below the fraction
        (2, 0.5, 5, 2),  # never more than are available
        (1, 0.01, 1, 1),
    ],
)
def test_sample_count(available: int, fraction: float, minimum: int, expected: int) -> None:
    assert sample_count(available, fraction, minimum) == expected


@pytest.mark.parametrize(("available", "fraction", "expected"), [(100, 0.07, 7), (50, 0.14, 7), (25, 0.28, 7)])
def test_sample_count_exact_fractions_are_not_rounded_up_by_float_error(
    available: int, fraction: float, expected: int
) -> None:
    # 0.07 * 100 == 7.000000000000001 in floating point; 7% of 100 silos is 7, not 8.
    assert sample_count(available, fraction, 1) == expected


def test_sample_silos_is_seeded_and_sorted() -> None:
    first = sample_silos(NAMES, 0.3, 1, round_rng(5, 2, FIT))
    again = sample_silos(NAMES, 0.3, 1, round_rng(5, 2, FIT))
    assert first == again
    assert len(first) == 3 and len(set(first)) == 3
    assert set(first) <= set(NAMES)
    assert first == sorted(first)


def test_sample_silos_does_not_depend_on_the_order_silos_registered_in() -> None:
    shuffled = NAMES[:]
    random.Random(1).shuffle(shuffled)
    assert sample_silos(shuffled, 0.4, 1, round_rng(3, 1, FIT)) == sample_silos(NAMES, 0.4, 1, round_rng(3, 1, FIT))


def test_samples_differ_across_rounds_seeds_and_purposes() -> None:
    by_round = {tuple(sample_silos(NAMES, 0.3, 1, round_rng(0, r, FIT))) for r in range(1, 6)}
    assert len(by_round) > 1
    by_seed = {tuple(sample_silos(NAMES, 0.3, 1, round_rng(s, 1, FIT))) for s in range(5)}
    assert len(by_seed) > 1
    by_purpose = {tuple(sample_silos(NAMES, 0.3, 1, round_rng(0, r, p))) for r in range(1, 4) for p in (FIT, EVALUATE)}
    assert len(by_purpose) > 1


def test_sampling_everyone_returns_all_names_sorted() -> None:
    assert sample_silos(["c", "a", "b"], 1.0, 1, round_rng(0, 1, FIT)) == ["a", "b", "c"]
    assert sample_silos(["c", "a", "b"], 0.1, 3, round_rng(0, 1, FIT)) == ["a", "b", "c"]


def test_wait_for_silos_times_out_naming_the_missing_silos() -> None:
    started = time.monotonic()
    with pytest.raises(RoundFailed) as info:
        wait_for_silos(lambda: ["hospital_a"], ["hospital_a", "hospital_b", "hospital_c"], 3, 0.3, poll=0.05)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
    message = info.value.one_line()
    assert "missing: hospital_b, hospital_c" in message
    assert "only 1 of min_available_clients=3" in message
    assert "min_available_clients" in (info.value.fix or "")


def test_wait_for_silos_returns_as_soon_as_enough_are_available() -> None:
    arrivals = iter([["a"], ["a", "b"], ["a", "b", "c"]])
    seen: list[list[str]] = []

    def available() -> list[str]:
        seen.append(next(arrivals))
        return seen[-1]

    assert wait_for_silos(available, ["a", "b", "c"], 2, timeout=5.0, poll=0.01) == ["a", "b"]
    assert len(seen) == 2


def test_wait_for_silos_does_not_sleep_when_enough_are_there() -> None:
    started = time.monotonic()
    assert wait_for_silos(lambda: ["a", "b"], ["a", "b"], 2, timeout=0.0, poll=10.0) == ["a", "b"]
    assert time.monotonic() - started < 1.0
