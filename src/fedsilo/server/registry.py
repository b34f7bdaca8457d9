"""Which silos take part: seeded sampling and bounded waits for enough silos to be available.

Each round's generator is derived from (seed, round, purpose), so sampling needs no saved RNG
state and a resumed run samples exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from fedsilo.errors import RoundFailed

FIT, EVALUATE = 0, 1


def round_rng(seed: int, round: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, round, purpose])


def sample_count(available: int, fraction: float, minimum: int) -> int:
    """How many silos to sample: the fraction of those available, but at least ``minimum``."""
    wanted = math.ceil(fraction * available - 1e-9)  # 0.07 * 100 is 7.000000000000001, not 8 silos
    return min(available, max(minimum, wanted))


def sample_silos(available: Sequence[str], fraction: float, minimum: int, rng: np.random.Generator) -> list[str]:
    """A seeded sample, returned in name order (the order silos are contacted in does not matter)."""
    names = sorted(available)
    k = sample_count(len(names), fraction, minimum)
    chosen = rng.choice(len(names), size=k, replace=False) if k < len(names) else range(len(names))
    return sorted(names[i] for i in chosen)


def wait_for_silos(
    available: Callable[[], list[str]],
    expected: Sequence[str],
    minimum: int,
    timeout: float,
    poll: float = 0.2,
) -> list[str]:
    """Wait until ``minimum`` silos are available, or fail naming the missing ones."""
    deadline = time.monotonic() + timeout
    while True:
        names = available()
        if len(names) >= minimum:
            return names
        if time.monotonic() >= deadline:
            missing = sorted(set(expected) - set(names))
            raise RoundFailed(
                f"only {len(names)} of min_available_clients={minimum} silos became available "
                f"within {timeout:.0f}s; missing: {', '.join(missing) or 'none named'}",
                "start the missing silos, or lower strategy.min_available_clients",
            )
        time.sleep(poll)
