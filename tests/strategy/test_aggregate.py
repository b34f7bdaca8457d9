"""strategy/aggregate.py: the robust rules, pinned by hand (the weighted mean, WeightedSum, in tests/wire)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.strategy.aggregate import (
    coordinate_median,
    krum_min_updates,
    krum_scores,
    multi_krum,
    pairwise_sq_distances,
    trim_count,
    trimmed_mean,
)

# --- robust rules: unweighted by design, so weights never appear below ---------------------------


def test_coordinate_median_by_hand() -> None:
    updates = [
        {"w": np.array([1.0, 5.0, -1.0], np.float32), "n": np.array(3, np.int64)},
        {"w": np.array([2.0, 0.0, -7.0], np.float32), "n": np.array(4, np.int64)},
        {"w": np.array([9.0, 3.0, 100.0], np.float32), "n": np.array(8, np.int64)},
    ]
    median = coordinate_median(updates)
    # per coordinate: {1,2,9} -> 2 ; {5,0,3} -> 3 ; {-1,-7,100} -> -1 ; n: {3,4,8} -> 4
    np.testing.assert_array_equal(median["w"], [2.0, 3.0, -1.0])
    assert median["w"].dtype == np.float32
    assert median["n"].shape == () and median["n"] == 4 and median["n"].dtype == np.int64


def test_median_of_an_even_count_averages_the_middle_two() -> None:
    updates = [{"w": np.array([v])} for v in (1.0, 2.0, 9.0, 4.0)]
    # sorted 1, 2, 4, 9 -> (2 + 4) / 2 = 3
    np.testing.assert_array_equal(coordinate_median(updates)["w"], [3.0])
    ints = [{"n": np.array([v], np.int32)} for v in (1, 2, 5, 9)]
    # (2 + 5) / 2 = 3.5 -> rounds to the even 4
    np.testing.assert_array_equal(coordinate_median(ints)["n"], [4])


@pytest.mark.parametrize(("n", "beta", "k"), [(4, 0.25, 1), (10, 0.3, 3), (5, 0.1, 0), (5, 0.2, 1), (9, 0.49, 4)])
def test_trim_count_is_floor_of_beta_n(n: int, beta: float, k: int) -> None:
    assert trim_count(n, beta) == k


def test_trim_count_rejects_a_beta_that_keeps_nothing() -> None:
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        trim_count(4, 0.5)


def test_trimmed_mean_by_hand() -> None:
    updates = [
        {"w": np.array([1.0, 0.0]), "n": np.array([2], np.int64)},
        {"w": np.array([2.0, -10.0]), "n": np.array([3], np.int64)},
        {"w": np.array([9.0, 3.0]), "n": np.array([100], np.int64)},
        {"w": np.array([4.0, 5.0]), "n": np.array([4], np.int64)},
    ]
    out = trimmed_mean(updates, 0.25)  # floor(0.25 * 4) = 1 dropped at each end
    # w[0]: 1 2 4 9 -> (2 + 4) / 2 = 3 ; w[1]: -10 0 3 5 -> (0 + 3) / 2 = 1.5 ; n: 2 3 4 100 -> 3.5 -> 4
    np.testing.assert_array_equal(out["w"], [3.0, 1.5])
    np.testing.assert_array_equal(out["n"], [4])
    # beta = 0.2 of 4 trims floor(0.8) = 0: the plain mean (1+2+9+4)/4 = 4, (0-10+3+5)/4 = -0.5
    np.testing.assert_array_equal(trimmed_mean(updates, 0.2)["w"], [4.0, -0.5])


# Five updates split over two named arrays, x and y; e is far away (the attacker):
#   a = (0, 0), b = (1, 0), c = (0, 2), d = (1, 1), e = (10, 10)
KRUM_POINTS = [(0.0, 0.0), (1.0, 0.0), (0.0, 2.0), (1.0, 1.0), (10.0, 10.0)]


def krum_updates() -> list[dict[str, np.ndarray]]:
    return [{"x": np.array([x], np.float32), "y": np.array([y], np.float32)} for x, y in KRUM_POINTS]


def test_pairwise_distances_span_all_arrays() -> None:
    dist = pairwise_sq_distances(krum_updates())
    # ab=1 ac=4 ad=2 ae=100+100=200 bc=1+4=5 bd=1 be=81+100=181 cd=1+1=2 ce=100+64=164 de=81+81=162
    expected = [
        [0, 1, 4, 2, 200],
        [1, 0, 5, 1, 181],
        [4, 5, 0, 2, 164],
        [2, 1, 2, 0, 162],
        [200, 181, 164, 162, 0],
    ]
    np.testing.assert_allclose(dist, expected, atol=1e-9)


def test_integer_counters_do_not_count_in_distances() -> None:
    # BatchNorm-like counters that grow with data size: silo b counted 5000 steps, the others 10
    updates = [{**u, "steps": np.array(5000 if i == 1 else 10, np.int64)} for i, u in enumerate(krum_updates())]
    np.testing.assert_allclose(pairwise_sq_distances(updates), pairwise_sq_distances(krum_updates()), atol=1e-9)
    _, chosen = multi_krum(updates, 1, 1)
    assert chosen == [1]


def test_krum_scores_by_hand() -> None:
    # f = 1, n = 5: each score sums the n - f - 2 = 2 smallest distances to the others
    # a: {1,4,2,200} -> 1+2 = 3 ; b: {1,5,1,181} -> 2 ; c: {4,5,2,164} -> 6 ; d: {2,1,2,162} -> 3
    # e: {200,181,164,162} -> 162+164 = 326
    np.testing.assert_allclose(krum_scores(krum_updates(), 1), [3, 2, 6, 3, 326], atol=1e-9)


def test_krum_and_multi_krum_by_hand() -> None:
    updates = krum_updates()
    krum, chosen = multi_krum(updates, 1, 1)
    assert chosen == [1]  # b has the lowest score
    assert krum["x"].dtype == np.float32
    np.testing.assert_array_equal([krum["x"][0], krum["y"][0]], [1.0, 0.0])
    # m = 3: b (2), then a and d (3 each, a came first): ((0+1+1)/3, (0+0+1)/3)
    three, chosen = multi_krum(updates, 1, 3)
    assert chosen == [1, 0, 3]
    np.testing.assert_allclose([three["x"][0], three["y"][0]], [2 / 3, 1 / 3], rtol=1e-6)
    # m = n - f = 4 adds c: ((0+1+0+1)/4, (0+0+2+1)/4) = (0.5, 0.75); the attacker e is never chosen
    four, chosen = multi_krum(updates, 1, 4)
    assert sorted(chosen) == [0, 1, 2, 3]
    np.testing.assert_allclose([four["x"][0], four["y"][0]], [0.5, 0.75])


def test_krum_needs_more_than_2f_plus_2_updates() -> None:
    assert krum_min_updates(1) == 5 and krum_min_updates(0) == 3
    with pytest.raises(ValueError, match="f=1 needs at least 5 updates, got 4"):
        krum_scores(krum_updates()[:4], 1)
    with pytest.raises(ValueError, match="selects 1 to n - f = 4 updates, not 5"):
        multi_krum(krum_updates(), 1, 5)
