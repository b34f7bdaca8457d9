"""The difference of two models and its inverse: the one pair every update path uses.

A silo's update is ``delta(trained, global)``; what the server gets back from a mean of deltas is
``apply(global, mean, scale)``. Codecs, clipping, central and distributed DP, and secure
aggregation all go through these two, so that the arithmetic (float64, integers rounded on the way
back) is written once. Results cast to float32 equal float32 arithmetic exactly: float64 has more
than twice float32's precision, so rounding twice gives the once-rounded result.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import DTypeLike

from fedsilo.wire.arrays import ArrayDict


def delta(
    model: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], dtype: DTypeLike | None = np.float64
) -> ArrayDict:
    """``model - reference`` for each array of ``reference`` (in its order), computed in float64.

    ``dtype=None`` casts each difference to that array's own dtype in ``model`` (what a codec sends).
    """
    out: ArrayDict = {}
    for name, ref in reference.items():
        diff = np.asarray(model[name], np.float64) - np.asarray(ref, np.float64)
        out[name] = diff if dtype is np.float64 else diff.astype(dtype if dtype is not None else model[name].dtype)
    return out


def apply(reference: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray], scale: float = 1.0) -> ArrayDict:
    """``reference + scale * delta`` in float64, cast back to each reference array's dtype (integers rounded)."""
    out: ArrayDict = {}
    for name, ref in reference.items():
        value = np.asarray(ref, np.float64) + np.asarray(delta[name], np.float64) * scale
        out[name] = np.asarray(np.rint(value) if np.issubdtype(ref.dtype, np.integer) else value, ref.dtype)
    return out
