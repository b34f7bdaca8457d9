"""transport/inproc.py: direct calls to endpoints in this process."""

from __future__ import annotations

import numpy as np

from fedsilo.transport.inproc import InProcessTransport
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes


class Endpoint:
    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n
        self.received: list[int] = []

    def fit(self, ins: FitIns) -> FitRes | Failure:
        self.received.append(ins.round)
        if self.n == 0:
            return Failure(self.name, "no data")
        return FitRes(self.name, {k: v * self.n for k, v in ins.parameters.items()}, self.n)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return EvaluateRes(self.name, float(self.n), self.n)


def test_one_reply_per_requested_silo_in_order() -> None:
    a, b, c = Endpoint("a", 2), Endpoint("b", 0), Endpoint("c", 5)
    transport = InProcessTransport({"a": a, "b": b, "c": c})
    assert transport.available() == ["a", "b", "c"]
    replies = list(transport.fit(["c", "b"], FitIns(4, {"w": np.ones(2)}), timeout=1.0))
    assert [r.silo for r in replies] == ["c", "b"]
    assert isinstance(replies[0], FitRes)
    np.testing.assert_array_equal(replies[0].parameters["w"], [5, 5])
    assert isinstance(replies[1], Failure)
    assert (a.received, b.received, c.received) == ([], [4], [4])
    evaluations = list(transport.evaluate(["a"], EvaluateIns(4, {}), timeout=1.0))
    assert [(e.silo, e.loss) for e in evaluations] == [("a", 2.0)]


def test_close_is_idempotent_and_forgets_the_silos() -> None:
    transport = InProcessTransport({"a": Endpoint("a", 1)})
    transport.close()
    transport.close()
    assert transport.available() == []
