"""Distributed DP for secure aggregation: what one silo does to its update before masking it.

With secure aggregation the server never holds a single update, so it cannot add DP-FedAvg's noise
to a noise-free sum: each silo clips its update (silo model - global model) to L2 norm ``C`` and adds
its share of the noise, ``N(0, (z C)^2 / t)`` per value (:func:`fedsilo.privacy.dp.distributed_noise_std`).
The masked sum over ``k >= t`` silos then carries noise of std ``z C sqrt(k / t) >= z C``, the central
DP-FedAvg amount, and the server only ever unmasks that noisy sum.

Which ``t``: the fewest silos the sum can hold. A secure-aggregation round never completes with fewer
than its threshold survivors, and the server loop never accepts fewer than ``min_fit_clients``, so
``t = max(threshold, min_fit_clients)``; a smaller ``t`` would only add noise, a larger one would break
the guarantee when silos drop out. Weights are uniform (``1 / n``), as in DP-FedAvg: an example count
would let the weight, and so the sensitivity, depend on the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsilo.privacy.dp import add_distributed_noise, clip
from fedsilo.wire.arrays import ArrayDict


@dataclass(frozen=True, slots=True)
class DistributedDP:
    """The silo-side settings, sent by the server in the fit config."""

    noise_multiplier: float  # z: noise std on the sum, in units of clip_norm
    clip_norm: float  # C
    min_silos: int = 1  # the server's min_fit_clients: a sum never holds fewer updates

    def least_summands(self, threshold: int) -> int:
        """``t`` of the module docstring: the fewest updates a completed sum can hold."""
        return max(threshold, self.min_silos, 1)


def noised_update(
    delta: Mapping[str, np.ndarray], dp: DistributedDP, threshold: int, rng: np.random.Generator
) -> tuple[ArrayDict, float]:
    """``delta`` clipped to ``dp.clip_norm`` plus this silo's noise share; also the delta's norm before clipping."""
    clipped, norm = clip(delta, dp.clip_norm)
    return add_distributed_noise(clipped, dp.noise_multiplier, dp.clip_norm, dp.least_summands(threshold), rng), norm
