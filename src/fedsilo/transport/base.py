"""The one narrow interface between the server loop and however silos are reached.

The server sends one instruction to many silos at once (so a transport can broadcast the model
once) and consumes replies as they arrive. A reply's arrays may be views into a transport buffer:
the consumer must finish with a reply before asking for the next one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from fedsilo.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes


class SiloEndpoint(Protocol):
    """Anything that answers a silo's messages directly (a silo agent, in practice)."""

    def fit(self, ins: FitIns) -> FitRes | Failure: ...

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes | Failure: ...


class Transport(Protocol):
    def available(self) -> list[str]:
        """Names of the silos that can take work now."""

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        """Yield one reply per silo, in arrival order; a silo missing the deadline yields a timeout Failure."""

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        """As ``fit``, for evaluation."""

    def close(self) -> None:
        """Release processes and buffers; safe to call twice."""
