"""The one narrow interface between the server loop and however silos are reached.

The server sends one instruction to many silos at once (so a transport can broadcast the model
once) and consumes replies as they arrive. A reply's arrays may be views into a transport buffer:
the consumer must finish with a reply before asking for the next one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes


class SiloEndpoint(Protocol):
    """Anything that answers a silo's messages directly (a silo agent, in practice)."""

    def fit(self, ins: FitIns) -> FitRes | Failure: ...

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes | Failure: ...

    def exchange(self, step: str, payload: bytes) -> bytes | Failure: ...


class Transport(Protocol):
    def available(self) -> list[str]:
        """Names of the silos that can take work now."""

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        """Yield one reply per silo, in arrival order; a silo missing the deadline yields a timeout Failure."""

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        """As ``fit``, for evaluation."""

    def exchange(
        self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply_bytes: int
    ) -> Iterator[ExchangeRes | Failure]:
        """One step of a multi-step protocol: each named silo gets its own bytes; replies as they arrive.

        A silo's reply must come from the same silo process that trained this round (its protocol
        state lives there); one larger than ``max_reply_bytes`` or later than ``timeout`` is a Failure.
        """

    def close(self) -> None:
        """Release processes and buffers; safe to call twice."""
