"""What crosses between server and silos: frozen, slotted dataclasses, checked on receipt.

Configs and metrics are flat JSON-able mappings (str -> bool/int/float/str); parameters are an
``ArrayDict``. ``check_update`` is the one place a received update is validated; it reports every
problem at once so that a silo operator can fix them in one go.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedsilo.arrays import ArrayDict, ArraySpec
from fedsilo.errors import UpdateRejected

Scalar = bool | int | float | str
Config = Mapping[str, Scalar]
Metrics = Mapping[str, float]

#: A received update larger than this is refused outright (2 GiB; far above any spec'd model).
DEFAULT_MAX_UPDATE_BYTES = 2 * 1024**3


@dataclass(frozen=True, slots=True)
class FitIns:
    """Train on your data starting from ``parameters``."""

    round: int
    parameters: ArrayDict
    config: Config = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FitRes:
    """A silo's trained parameters, how many examples produced them, and training metrics."""

    silo: str
    parameters: ArrayDict
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvaluateIns:
    round: int
    parameters: ArrayDict
    config: Config = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvaluateRes:
    silo: str
    loss: float
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExchangeRes:
    """A silo's answer to one step of a multi-step protocol (secure aggregation): opaque wire bytes.

    The bytes are the protocol's own serialization (``fedsilo.privacy.secagg.wire``), parsed by the
    server as untrusted input; the transport only carries them and says which silo sent them.
    """

    silo: str
    step: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    """A silo could not answer: it raised, timed out, disconnected, or its update was rejected."""

    silo: str
    reason: str
    kind: str = "error"  # error | timeout | rejected | disconnected


def update_problems(
    parameters: Mapping[str, np.ndarray],
    expected: Mapping[str, ArraySpec],
    max_bytes: int = DEFAULT_MAX_UPDATE_BYTES,
) -> list[str]:
    """Every way ``parameters`` differs from ``expected``; empty when the update is acceptable."""
    problems: list[str] = []
    missing = [k for k in expected if k not in parameters]
    extra = [k for k in parameters if k not in expected]
    if missing:
        problems.append(f"missing arrays {missing}")
    if extra:
        problems.append(f"unexpected arrays {extra}")
    total = 0
    for name, spec in expected.items():
        arr = parameters.get(name)
        if arr is None:
            continue
        if not isinstance(arr, np.ndarray):
            problems.append(f"{name}: not a numpy array but {type(arr).__name__}")
            continue
        total += int(arr.nbytes)
        if tuple(arr.shape) != spec.shape:
            problems.append(f"{name}: shape {tuple(arr.shape)}, expected {spec.shape}")
        if str(arr.dtype) != spec.dtype:
            problems.append(f"{name}: dtype {arr.dtype}, expected {spec.dtype}")
        elif np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            problems.append(f"{name}: {bad} non-finite values (NaN or inf)")
    if total > max_bytes:
        problems.append(f"update is {total} bytes, over the limit of {max_bytes}")
    return problems


def check_update(
    silo: str,
    parameters: Mapping[str, np.ndarray],
    expected: Mapping[str, ArraySpec],
    max_bytes: int = DEFAULT_MAX_UPDATE_BYTES,
) -> None:
    """Raise :class:`UpdateRejected` naming every problem of a silo's update."""
    problems = update_problems(parameters, expected, max_bytes)
    if problems:
        raise UpdateRejected(
            f"update from silo '{silo}' rejected: " + "; ".join(problems),
            "check that the silo runs the same task module (same model) as the server",
        )


def check_num_examples(silo: str, num_examples: object) -> int:
    """A weight must be a positive integer, or a silo could dominate (or zero out) the mean."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
        raise UpdateRejected(f"silo '{silo}' reported num_examples={num_examples!r}, not an integer")
    if num_examples <= 0:
        raise UpdateRejected(
            f"silo '{silo}' reported num_examples={num_examples}",
            "a silo must train on at least one example",
        )
    return int(num_examples)


def clean_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """Keep finite numeric metrics only, as floats (they are written to JSON)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, bool | int | float | np.integer | np.floating) and math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out
