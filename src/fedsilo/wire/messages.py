"""What crosses between server and silos: frozen, slotted dataclasses, checked on receipt.

Instructions are typed (:mod:`fedsilo.wire.instructions`); metrics are flat mappings of name to
float; parameters are an ``ArrayDict``. ``check_update`` is the one place a received update is
validated; it reports every problem at once so that a silo operator can fix them in one go.
A :class:`Failure` has one of four kinds, the same in every transport (:data:`FAILURE_KINDS`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from fedsilo.errors import ParameterError, UpdateRejected
from fedsilo.wire.arrays import ArrayDict, ArraySpec
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions

Metrics = Mapping[str, float]
#: Why a silo gave no usable reply. ``error``: it answered that it failed (its code raised);
#: ``timeout``: no reply by the deadline; ``rejected``: the server refused what it sent (a bad
#: update, a reply over its size limit, a malformed message); ``disconnected``: it (or the
#: process serving it) went away.
FailureKind = Literal["error", "timeout", "rejected", "disconnected"]
FAILURE_KINDS: tuple[FailureKind, ...] = get_args(FailureKind)

#: A received update larger than this is refused outright (2 GiB; far above any spec'd model).
DEFAULT_MAX_UPDATE_BYTES = 2 * 1024**3
#: The most examples one reply may claim (2^40, about 10^12): a count is a weight in a mean, and
#: even 10^6 silos at the bound sum far inside int64.
MAX_NUM_EXAMPLES = 2**40
#: A metric's name: a letter or ``_``, then letters, digits, spaces and ``_ . - /`` (100 at most).
#: So a name is safe on a console, in a file, in the report and as an MLflow key.
METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/ ]{0,99}$")


@dataclass(frozen=True, slots=True)
class FitIns:
    """Train on your data starting from ``parameters``."""

    round: int
    parameters: ArrayDict
    instructions: FitInstructions = field(default_factory=FitInstructions)


@dataclass(frozen=True, slots=True)
class FitRes:
    """A silo's trained parameters, how many examples produced them, and training metrics."""

    silo: str
    parameters: ArrayDict
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvaluateIns:
    """Evaluate ``parameters`` on your test data."""

    round: int
    parameters: ArrayDict
    instructions: EvaluateInstructions = field(default_factory=EvaluateInstructions)


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
    kind: FailureKind = "error"

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ParameterError(
                f"failure kind {self.kind!r} is not one of {', '.join(FAILURE_KINDS)}", "use one of the four kinds"
            )


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


def check_num_examples(silo: str, num_examples: object, minimum: int = 1) -> int:
    """A weight must be an integer in ``[minimum, MAX_NUM_EXAMPLES]``, or a silo could dominate
    (or zero out) the mean, or overflow the total."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
        raise UpdateRejected(
            f"silo '{silo}' reported num_examples={num_examples!r}, not an integer",
            "return the number of training examples as an int",
        )
    if num_examples < minimum:
        raise UpdateRejected(
            f"silo '{silo}' reported num_examples={num_examples}",
            "a silo must train on at least one example",
        )
    if num_examples > MAX_NUM_EXAMPLES:
        raise UpdateRejected(
            f"silo '{silo}' reported num_examples={num_examples}, over the limit of {MAX_NUM_EXAMPLES}",
            "return the number of examples the silo actually used",
        )
    return int(num_examples)


def check_loss(silo: str, loss: object) -> float:
    """An evaluation's loss: a finite number (a NaN would make the federated loss NaN)."""
    if isinstance(loss, bool) or not isinstance(loss, int | float | np.integer | np.floating):
        raise UpdateRejected(f"silo '{silo}' reported loss={loss!r:.50}, not a number", "return a float loss")
    if not math.isfinite(float(loss)):
        raise UpdateRejected(
            f"silo '{silo}' reported loss={float(loss)}", "the silo's model diverged or its test data holds NaN"
        )
    return float(loss)


def metric_problems(metrics: Mapping[Any, Any], reserved: Callable[[str], bool]) -> list[str]:
    """Every way ``metrics`` from a silo is unacceptable: names (:data:`METRIC_NAME`, not
    ``reserved``) and values (finite numbers)."""
    problems = []
    for name, value in metrics.items():
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            problems.append(f"metric name {name!r:.60} is not letters, digits, spaces, _ . - / (at most 100)")
        elif reserved(name):
            problems.append(f"metric name {name!r} is the row's own")
        elif isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            problems.append(f"metric {name!r} is not a number ({type(value).__name__})")
        elif not math.isfinite(float(value)):
            problems.append(f"metric {name!r} is {float(value)}")
    return problems


def check_metrics(silo: str, metrics: Mapping[Any, Any], reserved: Callable[[str], bool]) -> dict[str, float]:
    """The metrics as floats, or :class:`UpdateRejected` naming every problem."""
    problems = metric_problems(metrics, reserved)
    if problems:
        raise UpdateRejected(
            f"metrics from silo '{silo}' rejected: " + "; ".join(problems),
            "return finite numbers under names of your own (not loss, num_examples, round, ...)",
        )
    return {str(k): float(v) for k, v in metrics.items()}


def clean_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """Keep finite numeric metrics only, as floats (they are written to JSON)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, bool | int | float | np.integer | np.floating) and math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out
