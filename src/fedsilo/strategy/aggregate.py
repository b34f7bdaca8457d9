"""Pure aggregation math over ArrayDicts (no state, no I/O).

The example-weighted mean is :class:`fedsilo.wire.arrays.WeightedSum` (streamed as updates arrive).
The robust rules (median, trimmed mean, Krum) are *unweighted*, as in their papers, and on purpose: a
silo's example count is self-reported, so weighting by it would let one dishonest silo claim a huge
count and outvote everyone. Every result takes the dtypes of the first update; integer arrays (e.g.
BatchNorm's ``num_batches_tracked``) are rounded to the nearest integer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedsilo.wire.arrays import ArrayDict

Updates = Sequence[Mapping[str, np.ndarray]]


def _cast(value: np.ndarray, like: np.ndarray) -> np.ndarray:
    value = np.asarray(value)  # 0-d results of reductions would otherwise be numpy scalars
    if np.issubdtype(like.dtype, np.integer):
        value = np.rint(value)
    return np.asarray(value, dtype=like.dtype)


def _stacked(updates: Updates, name: str) -> np.ndarray:
    """One array of every update, stacked on a new first axis, in float64."""
    return np.stack([np.asarray(u[name], dtype=np.float64) for u in updates])


def coordinate_median(updates: Updates) -> ArrayDict:
    """Coordinate-wise median (Yin et al., ICML 2018); an even count averages the two middle values."""
    if not updates:
        raise ValueError("need at least one update")
    n = len(updates)
    out: ArrayDict = {}
    for name, like in updates[0].items():
        # Sort along the silo axis and take the middle: np.median along this axis was ~7x slower
        # (4.6 s against 0.6 s for 10 silos x 5M float32 on the 2-core development machine).
        ordered = np.sort(_stacked(updates, name), axis=0)
        middle = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        out[name] = _cast(middle, like)
    return out


def trim_count(n: int, beta: float) -> int:
    """How many values a beta-trimmed mean drops at *each* end of ``n``: ``floor(beta * n)``."""
    if not 0 <= beta < 0.5:
        raise ValueError("beta must be in [0, 0.5) so that at least one value is kept")
    return math.floor(beta * n + 1e-9)  # 0.3 * 10 is 2.9999999999999996 in floating point


def trimmed_mean(updates: Updates, beta: float) -> ArrayDict:
    """Coordinate-wise beta-trimmed mean (Yin et al., ICML 2018).

    In every coordinate, the ``floor(beta * n)`` largest and as many smallest values are dropped
    and the rest averaged, so up to that many arbitrary (Byzantine) updates cannot move the result
    outside the range of the honest ones.
    """
    if not updates:
        raise ValueError("need at least one update")
    k = trim_count(len(updates), beta)
    out: ArrayDict = {}
    for name, like in updates[0].items():
        ordered = np.sort(_stacked(updates, name), axis=0)
        out[name] = _cast(ordered[k : len(updates) - k].mean(axis=0), like)
    return out


def krum_min_updates(byzantine: int) -> int:
    """Krum's guarantee needs ``n > 2f + 2`` updates (Blanchard et al. 2017): at least ``2f + 3``."""
    return 2 * byzantine + 3


def pairwise_sq_distances(updates: Updates) -> np.ndarray:
    """``D[i, j]`` = squared Euclidean distance between updates i and j, float arrays as one vector.

    Integer arrays are left out: they are counters (BatchNorm's ``num_batches_tracked`` grows with a
    silo's data size), and a difference of thousands of steps would outweigh every parameter.
    Computed per array with the Gram identity on data centred by its mean (distances do not change
    under a shift, and centring keeps the subtraction ``|a|^2 + |b|^2 - 2ab`` from cancelling).
    """
    n = len(updates)
    dist = np.zeros((n, n))
    for name, like in updates[0].items():
        if not np.issubdtype(like.dtype, np.floating):
            continue
        x = _stacked(updates, name).reshape(n, -1)
        x = x - x.mean(axis=0)
        sq = np.einsum("ij,ij->i", x, x)
        dist += sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(dist, 0.0)
    return np.maximum(dist, 0.0)


def krum_scores(updates: Updates, byzantine: int) -> np.ndarray:
    """Krum's score of each update: the sum of squared distances to its ``n - f - 2`` nearest others."""
    n = len(updates)
    if n < krum_min_updates(byzantine):
        raise ValueError(f"Krum with f={byzantine} needs at least {krum_min_updates(byzantine)} updates, got {n}")
    dist = pairwise_sq_distances(updates)
    neighbours = n - byzantine - 2
    scores = np.empty(n)
    for i in range(n):
        others = np.delete(dist[i], i)
        scores[i] = np.sort(others)[:neighbours].sum()
    return scores


def multi_krum(updates: Updates, byzantine: int, num_selected: int) -> tuple[ArrayDict, list[int]]:
    """Multi-Krum (Blanchard et al., NeurIPS 2017): the plain mean of the ``m`` best-scored updates.

    ``m = 1`` is Krum itself (the best update is returned as it is). Ties in score go to the update
    that came first. Returns the aggregate and the indices chosen, best first.
    """
    n = len(updates)
    if not 1 <= num_selected <= n - byzantine:
        raise ValueError(f"Multi-Krum selects 1 to n - f = {n - byzantine} updates, not {num_selected}")
    scores = krum_scores(updates, byzantine)
    chosen = [int(i) for i in np.argsort(scores, kind="stable")[:num_selected]]
    picked = [updates[i] for i in chosen]
    return {k: _cast(_stacked(picked, k).mean(axis=0), v) for k, v in updates[0].items()}, chosen
