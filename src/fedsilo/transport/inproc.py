"""Direct calls to silo endpoints in this process: the simplest transport, used for tests and debugging."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from fedsilo.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes
from fedsilo.transport.base import SiloEndpoint


class InProcessTransport:
    def __init__(self, agents: Mapping[str, SiloEndpoint], sampleable: Sequence[str] | None = None) -> None:
        """``sampleable`` limits which silos rounds may pick (others, e.g. a baseline's, are called by name)."""
        self._agents = dict(agents)
        self._sampleable = list(sampleable) if sampleable is not None else list(self._agents)

    def available(self) -> list[str]:
        return list(self._sampleable)

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        for name in silos:
            yield self._agents[name].fit(ins)

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        for name in silos:
            yield self._agents[name].evaluate(ins)

    def exchange(
        self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply_bytes: int
    ) -> Iterator[ExchangeRes | Failure]:
        for name, payload in messages.items():
            reply = self._agents[name].exchange(step, payload)
            if isinstance(reply, Failure):
                yield reply
            elif len(reply) > max_reply_bytes:
                yield Failure(name, f"{step} reply of {len(reply)} bytes is over {max_reply_bytes}", "rejected")
            else:
                yield ExchangeRes(name, step, reply)

    def close(self) -> None:
        self._agents.clear()
        self._sampleable.clear()
