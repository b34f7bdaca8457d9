"""Pure aggregation math over ArrayDicts (no state, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedsilo.arrays import ArrayDict, WeightedSum


def weighted_mean(updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> ArrayDict:
    """Example-weighted mean of ``updates`` (McMahan et al. 2017), in the dtypes of the first."""
    if not updates or len(updates) != len(weights):
        raise ValueError("need one weight per update and at least one update")
    acc = WeightedSum()
    for update, weight in zip(updates, weights, strict=True):
        acc.add(update, weight)
    return acc.mean(updates[0])
