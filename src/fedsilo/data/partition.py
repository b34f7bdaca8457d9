"""Pure functions that split sample indices across silos.

Each function takes its randomness from an injected ``numpy.random.Generator`` (never the global
one), so the same seed gives the same split everywhere. Every partition returns one sorted
``int64`` index array per silo; together they are disjoint and cover every sample.

- :func:`iid`: a uniform shuffle cut into pieces of the requested relative ``sizes``.
- :func:`dirichlet`: label skew as in Hsu, Qi & Brown (2019), "Measuring the effects of
  non-identical data distribution for federated visual classification" (arXiv:1909.06335):
  each class is shared out with proportions drawn from Dir(alpha); small alpha, strong skew.
- :func:`by_group`: whole groups (a patient, a lesion) per silo, so no group leaks across silos.
- :func:`by_value`: natural silos: each sample goes to the silo named by one of its columns (the
  hospital or site it came from); with ``groups``, a group seen at several sites goes wholly to one.
- :func:`holdout`: a silo's own train/test cut, stratified by label or kept group-aware.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_MAX_DIRICHLET_TRIES = 100


def _check_silos(num_silos: int, available: int, what: str) -> None:
    if isinstance(num_silos, bool) or not isinstance(num_silos, int | np.integer) or num_silos < 1:
        raise ValueError(f"num_silos must be an integer of at least 1, got {num_silos!r}")
    if num_silos > available:
        raise ValueError(f"cannot make {num_silos} silos from only {available} {what}")


def _proportions(sizes: Sequence[float] | None, num_silos: int) -> np.ndarray:
    """Relative silo sizes, normalised to sum to 1 (equal when ``sizes`` is None)."""
    if sizes is None:
        return np.full(num_silos, 1.0 / num_silos)
    arr = np.asarray(sizes, dtype=np.float64)
    if arr.shape != (num_silos,):
        raise ValueError(f"sizes has {arr.size} entries but there are {num_silos} silos")
    if not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
        raise ValueError(f"sizes must be positive numbers, got {list(sizes)}")
    return arr / arr.sum()


def _counts(total: int, props: np.ndarray) -> np.ndarray:
    """Integer counts summing exactly to ``total`` (largest-remainder rounding of props*total)."""
    raw = props * total
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def _as_1d(values: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    return arr


def _unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-value group number and the size of each group."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def iid(n: int, num_silos: int, rng: np.random.Generator, sizes: Sequence[float] | None = None) -> list[np.ndarray]:
    """Shuffle ``range(n)`` and cut it into ``num_silos`` pieces proportional to ``sizes``."""
    _check_silos(num_silos, n, "samples")
    counts = _counts(n, _proportions(sizes, num_silos))
    while counts.min() == 0:  # a tiny share rounded to nothing: every silo needs a sample
        counts[int(np.argmax(counts))] -= 1
        counts[int(np.argmin(counts))] += 1
    perm = rng.permutation(n).astype(np.int64)
    return [np.sort(part) for part in np.split(perm, np.cumsum(counts)[:-1])]


def dirichlet(
    labels: np.ndarray,
    num_silos: int,
    alpha: float,
    rng: np.random.Generator,
    sizes: Sequence[float] | None = None,
    min_per_silo: int = 1,
) -> list[np.ndarray]:
    """Share each class across silos with proportions ~ Dir(alpha) weighted by ``sizes``.

    ``sizes`` steers each silo's expected total and ``alpha`` the label skew. Draws are repeated
    (a bounded number of times) until every silo holds at least ``min_per_silo`` samples.
    """
    labels = _as_1d(labels, "labels")
    _check_silos(num_silos, len(labels), "samples")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    if min_per_silo < 0 or min_per_silo * num_silos > len(labels):
        raise ValueError(f"min_per_silo={min_per_silo} is impossible for {num_silos} silos and {len(labels)} samples")
    props = _proportions(sizes, num_silos)
    inverse, _ = _unique_inverse(labels)
    by_class = [np.flatnonzero(inverse == c) for c in range(int(inverse.max()) + 1)]
    for _ in range(_MAX_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_silos)]
        for members in by_class:
            weights = rng.dirichlet(np.full(num_silos, float(alpha))) * props
            if not (np.all(np.isfinite(weights)) and weights.sum() > 0):
                break  # numerically degenerate draw: try again
            shuffled = rng.permutation(members)
            cuts = np.cumsum(_counts(len(members), weights / weights.sum()))[:-1]
            for silo, piece in enumerate(np.split(shuffled, cuts)):
                parts[silo].append(piece)
        else:
            result = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
            if min(len(r) for r in result) >= min_per_silo:
                return result
    raise ValueError(
        f"no Dirichlet draw gave every silo at least {min_per_silo} samples in "
        f"{_MAX_DIRICHLET_TRIES} tries (alpha={alpha}, {num_silos} silos, "
        f"{len(by_class)} classes); use a larger alpha or fewer silos"
    )


def by_group(
    groups: np.ndarray,
    num_silos: int,
    rng: np.random.Generator,
    sizes: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """Put every group wholly in one silo, filling silos greedily towards their ``sizes``.

    Groups are shuffled, then placed largest first (ties in random order) into the silo
    furthest below its target; the last groups go to any silo still empty.
    """
    groups = _as_1d(groups, "groups")
    inverse, counts = _unique_inverse(groups)
    _check_silos(num_silos, len(counts), "groups")
    target = _proportions(sizes, num_silos) * len(groups)
    order = rng.permutation(len(counts))
    order = order[np.argsort(-counts[order], kind="stable")]
    silo_of_group = np.empty(len(counts), dtype=np.int64)
    totals = np.zeros(num_silos, dtype=np.int64)
    for placed, group in enumerate(order):
        deficit = target - totals
        empty = totals == 0
        if len(order) - placed <= int(empty.sum()):
            deficit = np.where(empty, deficit, -np.inf)
        silo = int(np.argmax(deficit))
        silo_of_group[group] = silo
        totals[silo] += counts[group]
    silo_of_sample = silo_of_group[inverse]
    return [np.flatnonzero(silo_of_sample == s).astype(np.int64) for s in range(num_silos)]


def by_value(values: np.ndarray, names: Sequence[str], groups: np.ndarray | None = None) -> list[np.ndarray]:
    """One index array per name in ``names``: the samples whose value is that name.

    Samples whose value is not in ``names`` are left out. With ``groups`` every group goes wholly
    to the listed site that holds most of its samples (a tie goes to the name listed first), so a
    lesion photographed at two sites does not end up in two silos; a group with no sample at a
    listed site is left out. No randomness: the assignment is the data's own.
    """
    values = _as_1d(values, "values").astype(str)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"names must be distinct and at least one, got {list(names)}")
    lookup = {str(name): i for i, name in enumerate(names)}
    silo_of_sample = np.array([lookup.get(v, -1) for v in values], dtype=np.int64)
    if groups is not None:
        groups = _as_1d(groups, "groups")
        if len(groups) != len(values):
            raise ValueError(f"groups has {len(groups)} entries but values has {len(values)}")
        inverse, counts = _unique_inverse(groups)
        listed = silo_of_sample >= 0
        votes = np.zeros((len(counts), len(names)), dtype=np.int64)
        np.add.at(votes, (inverse[listed], silo_of_sample[listed]), 1)
        silo_of_group = np.where(votes.sum(axis=1) > 0, np.argmax(votes, axis=1), -1)
        silo_of_sample = silo_of_group[inverse]
    return [np.flatnonzero(silo_of_sample == s).astype(np.int64) for s in range(len(names))]


def holdout(
    indices: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    stratify_labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a silo's ``indices`` into local ``(train_idx, test_idx)``.

    ``stratify_labels`` and ``groups`` are indexed by the values in ``indices`` (pass the same
    full-length arrays given to the partition). With ``groups`` no group is in both halves
    (labels are then not stratified); with labels each class keeps its share in both halves.
    Both halves are non-empty.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1 (exclusive), got {fraction!r}")
    if len(idx) < 2:
        raise ValueError(f"need at least 2 samples to hold some out, got {len(idx)}")
    n_test = min(max(1, round(fraction * len(idx))), len(idx) - 1)
    in_test = np.zeros(len(idx), dtype=bool)
    if groups is not None:
        inverse, counts = _unique_inverse(np.asarray(groups)[idx])
        if len(counts) < 2:
            raise ValueError("need at least 2 groups to hold some out without sharing a group")
        chosen = np.zeros(len(counts), dtype=bool)
        total = 0
        for group in rng.permutation(len(counts)):
            if total + counts[group] <= n_test:
                chosen[group] = True
                total += int(counts[group])
        if total == 0:  # every group is larger than the target: take the smallest one
            chosen[int(np.argmin(counts))] = True
        in_test = chosen[inverse]
    elif stratify_labels is not None:
        inverse, counts = _unique_inverse(np.asarray(stratify_labels)[idx])
        quotas = _counts(n_test, counts / len(idx))
        for cls, quota in enumerate(quotas):
            members = rng.permutation(np.flatnonzero(inverse == cls))
            in_test[members[:quota]] = True
    else:
        in_test[rng.permutation(len(idx))[:n_test]] = True
    return np.sort(idx[~in_test]), np.sort(idx[in_test])
