"""Direct calls to silo endpoints in this process: the simplest transport, used for tests and debugging.

Silos answer one after another. A call cannot be interrupted, so a reply that comes after the
deadline is replaced by a ``timeout`` failure (and silos not yet started by then are not started):
the same replies and failure kinds as every other transport gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

from fedsilo.errors import FedsiloError
from fedsilo.transport.base import SiloEndpoint
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes

R = TypeVar("R")


class InProcessTransport:
    def __init__(self, agents: Mapping[str, SiloEndpoint], sampleable: Sequence[str] | None = None) -> None:
        """``sampleable`` limits which silos rounds may pick (others, e.g. a baseline's, are called by name)."""
        self._agents = dict(agents)
        self._sampleable = list(sampleable) if sampleable is not None else list(self._agents)

    def available(self) -> list[str]:
        return list(self._sampleable)

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        self._check(silos)
        return _by_deadline(silos, lambda name: self._agents[name].fit(ins), timeout, "round")

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        self._check(silos)
        return _by_deadline(silos, lambda name: self._agents[name].evaluate(ins), timeout, "round")

    def _check(self, silos: Sequence[str]) -> None:
        unknown = [s for s in silos if s not in self._agents]
        if unknown:  # as the worker pool and Ray say it
            raise FedsiloError(
                f"unknown silos {unknown}", "ask only for silos the transport lists as available (or the baselines')"
            )

    def exchange(
        self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply_bytes: int
    ) -> Iterator[ExchangeRes | Failure]:
        def answer(name: str) -> ExchangeRes | Failure:
            reply = self._agents[name].exchange(step, messages[name])
            if isinstance(reply, Failure):
                return reply
            if len(reply) > max_reply_bytes:
                return Failure(name, f"{step} reply of {len(reply)} bytes is over {max_reply_bytes}", "rejected")
            return ExchangeRes(name, step, reply)

        return _by_deadline(list(messages), answer, timeout, "step")

    def close(self) -> None:
        self._agents.clear()
        self._sampleable.clear()


def _by_deadline(silos: Sequence[str], call: Callable[[str], R], timeout: float, what: str) -> Iterator[R | Failure]:
    deadline = time.monotonic() + timeout
    for name in silos:
        if time.monotonic() >= deadline:
            yield Failure(name, f"not started before the {what} deadline of {timeout:.0f}s", "timeout")
            continue
        reply = call(name)
        if time.monotonic() > deadline:
            yield Failure(name, f"no reply within the {what} deadline of {timeout:.0f}s", "timeout")
        else:
            yield reply
