"""strategy/aggregate.py: the example-weighted mean, pinned by hand with unequal weights."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.strategy.aggregate import weighted_mean


def test_weighted_mean_by_hand() -> None:
    updates = [
        {"w": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "n": np.array([10], np.int64)},
        {"w": np.array([[2.0, 0.0], [1.0, 1.0]], np.float32), "n": np.array([0], np.int64)},
        {"w": np.array([[0.0, 1.0], [2.0, 3.0]], np.float32), "n": np.array([1], np.int64)},
    ]
    mean = weighted_mean(updates, [1, 3, 6])
    # w: ([[1,2],[3,4]] + 3*[[2,0],[1,1]] + 6*[[0,1],[2,3]]) / 10 = [[7,8],[18,25]] / 10
    np.testing.assert_allclose(mean["w"], [[0.7, 0.8], [1.8, 2.5]], rtol=1e-6)
    # n: (10 + 0 + 6) / 10 = 1.6 -> 2
    np.testing.assert_array_equal(mean["n"], [2])
    assert mean["w"].dtype == np.float32 and mean["n"].dtype == np.int64


def test_equal_weights_give_the_plain_mean() -> None:
    mean = weighted_mean([{"w": np.array([1.0, 5.0])}, {"w": np.array([3.0, -1.0])}], [4, 4])
    np.testing.assert_allclose(mean["w"], [2.0, 2.0])


def test_result_takes_the_dtypes_of_the_first_update() -> None:
    mean = weighted_mean([{"w": np.array([1.0], np.float16)}, {"w": np.array([2.0], np.float64)}], [1, 1])
    assert mean["w"].dtype == np.float16
    np.testing.assert_allclose(mean["w"], [1.5])


@pytest.mark.parametrize(
    ("updates", "weights", "match"),
    [
        ([], [], "at least one update"),
        ([{"w": np.ones(1)}], [1, 2], "one weight per update"),
        ([{"w": np.ones(1)}, {"w": np.ones(1)}], [1], "one weight per update"),
        ([{"w": np.ones(1)}, {"w": np.ones(1)}], [0, 0], "no weighted updates"),
        ([{"w": np.ones(1)}], [-1], "non-negative"),
    ],
)
def test_weighted_mean_errors(updates: list, weights: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        weighted_mean(updates, weights)
