"""The range of every number in the experiment YAML, each bound stated once.

Every float anywhere in the YAML is finite: NaN and infinity are refused by every section's model
(:data:`YAML_MODEL`'s ``allow_inf_nan=False``). Seeds, waits and counts are also bounded above
where a larger value would crash a run after ``validate`` passed it, or mislead; a value that is
merely unwise (a huge learning rate) is the user's to choose. Each error names the key.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

#: Every section's pydantic config: unknown keys are errors, values frozen, floats finite.
YAML_MODEL = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

#: A seed: what every generator fedsilo seeds takes (numpy's legacy RandomState and scikit-learn
#: take seeds below 2^32; numpy's Generator refuses negative ones).
MAX_SEED = 2**32 - 1
#: The longest wait, in seconds (7 days): a pool worker's wait is a ``poll()`` in milliseconds,
#: a C int, which overflows past 24.8 days.
MAX_WAIT_S = 7 * 24 * 3600.0
#: A count (rounds, epochs, batch size, silos, share holders): a C int, as numpy and torch take.
MAX_COUNT = 2**31 - 1
#: Worker processes (``runtime.workers``): more than any machine runs.
MAX_WORKERS = 1024
#: Adaptive clipping's geometric step (``C * exp(-eta_C * (b - gamma))``): past ~709 ``exp``
#: overflows; a clip norm that may change by e^10 in one round no longer adapts.
MAX_CLIP_LEARNING_RATE = 10.0


def seed_field(default: int = 0, **kwargs: Any) -> Any:
    """A seed: an integer in [0, MAX_SEED]."""
    return Field(default, ge=0, le=MAX_SEED, **kwargs)


def wait_field(default: float, description: str) -> Any:
    """A wait in seconds: more than 0, at most MAX_WAIT_S."""
    return Field(default, gt=0, le=MAX_WAIT_S, description=description)


def count_field(default: Any = ..., ge: int = 1, **kwargs: Any) -> Any:
    """A count: at least ``ge``, at most MAX_COUNT."""
    return Field(default, ge=ge, le=MAX_COUNT, **kwargs)
