"""Partition functions pinned by hand on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.data.partition import by_group, dirichlet, holdout, iid


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_partition(parts: list[np.ndarray], n: int) -> None:
    """Sorted int64 arrays, pairwise disjoint, covering range(n) exactly."""
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))


def test_iid_sizes_give_exact_proportions() -> None:
    parts = iid(3200, 3, rng(), sizes=[2, 10, 20])
    assert [len(p) for p in parts] == [200, 1000, 2000]
    assert_partition(parts, 3200)


def test_iid_equal_by_default_and_rounding_sums_to_n() -> None:
    parts = iid(10, 3, rng())
    assert sorted(len(p) for p in parts) == [3, 3, 4]
    assert_partition(parts, 10)


def test_iid_tiny_share_still_gets_a_sample() -> None:
    assert [len(p) for p in iid(5, 2, rng(), sizes=[1, 1000])] == [1, 4]


def test_iid_same_seed_same_split_other_seed_differs() -> None:
    a, b, c = iid(100, 4, rng(7)), iid(100, 4, rng(7)), iid(100, 4, rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def ten_classes() -> np.ndarray:
    return np.repeat(np.arange(10), 100)  # 10 classes x 100 samples


def class_shares(labels: np.ndarray, part: np.ndarray) -> np.ndarray:
    return np.bincount(labels[part], minlength=10) / len(part)


def largest_silo_share_per_class(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """For each class, the fraction of its samples held by the silo holding most of them."""
    counts = np.array([np.bincount(labels[p], minlength=10) for p in parts])
    return counts.max(axis=0) / counts.sum(axis=0)


def test_dirichlet_tiny_alpha_gives_strong_label_skew() -> None:
    labels = ten_classes()
    parts = dirichlet(labels, 4, 0.01, rng())
    assert_partition(parts, 1000)
    # Classes land (almost) wholly in one silo, so each silo sees only a few classes.
    assert largest_silo_share_per_class(labels, parts).mean() >= 0.9
    for part in parts:
        assert np.count_nonzero(class_shares(labels, part) > 0.01) <= 5


def test_dirichlet_large_alpha_gives_near_uniform_mix() -> None:
    labels = ten_classes()
    parts = dirichlet(labels, 4, 1e4, rng())
    assert_partition(parts, 1000)
    assert largest_silo_share_per_class(labels, parts).max() <= 0.3
    for part in parts:
        assert np.allclose(class_shares(labels, part), 0.1, atol=0.02)
        assert abs(len(part) - 250) <= 10


def test_dirichlet_sizes_steer_totals() -> None:
    parts = dirichlet(ten_classes(), 2, 1e4, rng(), sizes=[1, 3])
    assert abs(len(parts[0]) - 250) <= 10 and abs(len(parts[1]) - 750) <= 10


def test_dirichlet_same_seed_same_split() -> None:
    a = dirichlet(ten_classes(), 3, 0.5, rng(3))
    b = dirichlet(ten_classes(), 3, 0.5, rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_dirichlet_gives_up_with_a_clear_error() -> None:
    # Two classes, alpha tiny: each class goes to one silo, so 3 of 5 silos stay empty.
    with pytest.raises(ValueError, match="no Dirichlet draw gave every silo at least 1"):
        dirichlet(np.repeat([0, 1], 50), 5, 1e-4, rng())


def test_by_group_pinned_by_hand() -> None:
    # Group sizes a=2, b=1, c=3; largest first into the silo furthest below target 3/3:
    # c -> silo 0, a -> silo 1, b -> silo 1.
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    silo0, silo1 = by_group(groups, 2, rng())
    assert silo0.tolist() == [3, 4, 5]
    assert silo1.tolist() == [0, 1, 2]


def test_by_group_keeps_groups_whole_and_approaches_sizes() -> None:
    sizes_of_groups = np.random.default_rng(1).integers(1, 6, size=60)
    groups = np.repeat(np.arange(60) * 7, sizes_of_groups)  # ids need not be contiguous
    parts = by_group(groups, 3, rng(), sizes=[1, 1, 2])
    assert_partition(parts, len(groups))
    owners = [{int(g) for g in groups[p]} for p in parts]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    targets = np.array([0.25, 0.25, 0.5]) * len(groups)
    assert np.all(np.abs([len(p) for p in parts] - targets) <= 5)


def test_by_group_fills_every_silo_even_with_skewed_sizes() -> None:
    groups = np.repeat([0, 1], 50)
    parts = by_group(groups, 2, rng(), sizes=[1, 99])
    assert sorted(len(p) for p in parts) == [50, 50]


def test_holdout_stratified_exact_class_shares() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    idx = np.arange(100)
    train, test = holdout(idx, 0.25, rng(), stratify_labels=labels)
    assert len(test) == 25 and len(train) == 75
    assert np.bincount(labels[test]).tolist() == [20, 5]
    assert_partition([train, test], 100)


def test_holdout_labels_are_indexed_by_global_index() -> None:
    labels = np.array([9] * 50 + [0] * 25 + [1] * 25)  # entries 0..49 are not in this silo
    train, test = holdout(np.arange(50, 100), 0.2, rng(), stratify_labels=labels)
    assert np.bincount(labels[test]).tolist() == [5, 5]
    assert set(train) | set(test) == set(range(50, 100))


def test_holdout_group_aware_never_shares_a_group() -> None:
    groups = np.repeat(np.arange(20), 5)
    train, test = holdout(np.arange(100), 0.3, rng(), groups=groups)
    assert set(groups[train]).isdisjoint(groups[test])
    assert len(test) == 30 and len(train) == 70


def test_holdout_keeps_both_halves_non_empty() -> None:
    train, test = holdout(np.array([4, 9]), 0.01, rng())
    assert len(train) == 1 and len(test) == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: iid(10, 0, rng()), "num_silos"),
        (lambda: iid(2, 3, rng()), "cannot make 3 silos from only 2 samples"),
        (lambda: iid(10, 2, rng(), sizes=[1, 2, 3]), "sizes has 3 entries"),
        (lambda: iid(10, 2, rng(), sizes=[1, 0]), "positive"),
        (lambda: iid(10, 2, rng(), sizes=[1, -2]), "positive"),
        (lambda: dirichlet(np.zeros(10, int), 2, 0.0, rng()), "alpha"),
        (lambda: dirichlet(np.zeros(10, int), 2, -1.0, rng()), "alpha"),
        (lambda: dirichlet(np.zeros((5, 2), int), 2, 1.0, rng()), "1-D"),
        (lambda: dirichlet(np.zeros(4, int), 2, 1.0, rng(), min_per_silo=3), "min_per_silo"),
        (lambda: by_group(np.array([1, 1, 2]), 3, rng()), "from only 2 groups"),
        (lambda: holdout(np.arange(10), 0.0, rng()), "fraction"),
        (lambda: holdout(np.arange(10), 1.0, rng()), "fraction"),
        (lambda: holdout(np.arange(1), 0.5, rng()), "at least 2 samples"),
        (lambda: holdout(np.arange(4), 0.5, rng(), groups=np.zeros(4)), "2 groups"),
    ],
)
def test_bad_arguments_raise_value_error(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
