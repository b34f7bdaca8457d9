"""The privacy accountant: epsilon at a given delta after every round, over Google's dp-accounting.

Composition of subsampled Gaussian mechanisms is easy to get subtly wrong, so fedsilo does not
write the formulas itself: it records what happened as a list of events and asks Google's
``dp-accounting`` library (the accountant behind TensorFlow Privacy and TFF) for epsilon. The
default is its Renyi-DP accountant (fast, the standard for DP-SGD and DP-FedAvg); ``"pld"`` uses
its privacy-loss-distribution accountant, tighter (smaller epsilon) but slower.

An event is ``(noise_multiplier, sampling_rate, steps)``: ``steps`` repetitions of a Gaussian
mechanism with that noise multiplier (noise std / L2 sensitivity) applied to a Poisson sample in
which each participant is included with probability ``sampling_rate`` (1.0 = everyone, every
time). For DP-FedAvg a participant is a silo, a step is a round and the rate is the share of silos
sampled per round; for local DP-SGD a participant is one record and a step one batch. fedsilo's
server samples a fixed number of silos per round; accounting for it as Poisson sampling at the
same rate is the usual approximation (TFF and Opacus make it too) and is exact at rate 1.0.

State is explicit and plain data: an accountant is a frozen value, ``record`` returns a new one,
and ``to_dict``/``from_dict`` give JSON a checkpoint can carry. Runs of equal events are merged,
so state stays small over thousands of rounds. dp-accounting is imported only when epsilon is
asked for, so a server without the ``dp`` extra can still load and save the state.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from fedsilo.errors import ConfigError, ParameterError

Method = Literal["rdp", "pld"]
METHODS: tuple[str, ...] = ("rdp", "pld")


@dataclass(frozen=True, slots=True)
class PrivacyEvent:
    """``steps`` Poisson-subsampled Gaussian mechanisms with the same noise multiplier and rate."""

    noise_multiplier: float
    sampling_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            problems.append(f"noise_multiplier must be >= 0 and finite, got {self.noise_multiplier}")
        if not 0.0 <= self.sampling_rate <= 1.0:
            problems.append(f"sampling_rate must be in [0, 1], got {self.sampling_rate}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            problems.append(f"steps must be an integer >= 1, got {self.steps!r}")
        if problems:
            raise ParameterError("invalid privacy event: " + "; ".join(problems), "see privacy.dp and privacy.local_dp")

    def same_mechanism(self, other: PrivacyEvent) -> bool:
        return (self.noise_multiplier, self.sampling_rate) == (other.noise_multiplier, other.sampling_rate)

    def to_dict(self) -> dict[str, float | int]:
        return {"noise_multiplier": self.noise_multiplier, "sampling_rate": self.sampling_rate, "steps": self.steps}


def _check_delta(delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}", "use a delta well below 1 / number of records")


def _library() -> Any:
    try:
        import dp_accounting
    except ImportError as e:  # pragma: no cover - the dp extra is installed in the test environment
        raise ConfigError(
            "differential privacy accounting needs Google's dp-accounting library",
            "pip install 'fedsilo[dp]'",
        ) from e
    return dp_accounting


@dataclass(frozen=True, slots=True)
class PrivacyAccountant:
    """Everything spent so far (as events) and how to turn it into epsilon.

    >>> acc = PrivacyAccountant().record(PrivacyEvent(noise_multiplier=1.0, sampling_rate=0.5))
    >>> acc.epsilon(1e-5) > 0
    True
    """

    method: Method = "rdp"
    events: tuple[PrivacyEvent, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown privacy accountant '{self.method}'", "use 'rdp' or 'pld'")

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self.events)

    def record(self, event: PrivacyEvent) -> PrivacyAccountant:
        """A new accountant with ``event`` added (merged into the last event if the same mechanism)."""
        if self.events and self.events[-1].same_mechanism(event):
            last = self.events[-1]
            merged = PrivacyEvent(last.noise_multiplier, last.sampling_rate, last.steps + event.steps)
            return PrivacyAccountant(self.method, (*self.events[:-1], merged))
        return PrivacyAccountant(self.method, (*self.events, event))

    def epsilon(self, delta: float) -> float:
        """The smallest epsilon the library proves for ``delta`` (0.0 before any event; inf if unbounded)."""
        return _epsilon(self.method, self.events, delta)

    def would_exceed(self, target_epsilon: float, delta: float, next_event: PrivacyEvent) -> bool:
        """Whether recording ``next_event`` would take epsilon above ``target_epsilon``.

        The server asks this *before* a round, so training stops with the budget still kept.
        """
        if not target_epsilon > 0:
            raise ParameterError(
                f"target epsilon must be > 0, got {target_epsilon}", "set privacy.dp.target_epsilon > 0"
            )
        return self.record(next_event).epsilon(delta) > target_epsilon

    def rounds_left(self, target_epsilon: float, delta: float, event: PrivacyEvent, limit: int = 100_000) -> int:
        """How many more ``event``s fit under ``target_epsilon`` (capped at ``limit``): doubling, then bisection."""
        fits = lambda n: not self.would_exceed(target_epsilon, delta, _times(event, n))  # noqa: E731
        if not fits(1):
            return 0
        lo = 1  # lo always fits; hi (once found) never does
        while lo < limit:
            hi = min(lo * 2, limit)
            if not fits(hi):
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
                return lo
            lo = hi
        return limit

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state, for checkpoints and ``summary.json``."""
        return {"method": self.method, "events": [e.to_dict() for e in self.events]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PrivacyAccountant:
        try:
            events = tuple(
                PrivacyEvent(float(e["noise_multiplier"]), float(e["sampling_rate"]), int(e["steps"]))
                for e in state.get("events", [])
            )
            return cls(state.get("method", "rdp"), events)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"damaged privacy accountant state: {e}", "restore the checkpoint it came from") from e


def _times(event: PrivacyEvent, n: int) -> PrivacyEvent:
    return PrivacyEvent(event.noise_multiplier, event.sampling_rate, event.steps * n)


def _dp_event(lib: Any, event: PrivacyEvent) -> Any:
    gaussian = lib.GaussianDpEvent(event.noise_multiplier)
    single = gaussian if event.sampling_rate == 1.0 else lib.PoissonSampledDpEvent(event.sampling_rate, gaussian)
    return lib.SelfComposedDpEvent(single, event.steps)


def _epsilon(method: str, events: tuple[PrivacyEvent, ...], delta: float) -> float:
    _check_delta(delta)
    active = [e for e in events if e.sampling_rate > 0]
    if not active:
        return 0.0
    if any(e.noise_multiplier == 0 for e in active):
        return math.inf  # an un-noised release: no finite epsilon exists
    lib = _library()
    accountant = lib.rdp.RdpAccountant() if method == "rdp" else lib.pld.PLDAccountant()
    with _quiet_absl():
        accountant.compose(lib.ComposedDpEvent([_dp_event(lib, e) for e in active]))
        return float(accountant.get_epsilon(delta))


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Hide the RDP accountant's log lines about fractional orders it drops at high sampling rates.

    At rates like 0.5 the series for some orders below 2 does not converge; the library leaves
    those orders out (epsilon stays a valid bound, from the other orders) and logs one warning per
    order per call, which would flood a run's output every round.
    """
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
