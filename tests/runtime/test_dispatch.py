"""runtime/dispatch.py with a fake backend (no processes): the rules every pool's dispatch follows.

The fake runs a job as its ``outcome`` says: replies (a fit of ``n`` examples, a kept secure-
aggregation fit, an exchange answer), hangs past the deadline, or kills its worker. Its ``wait``
answers the earliest started job that does not hang, or nothing (the deadline) when all hang.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from fedsilo.runtime.dispatch import Dispatcher, Job, Reply, WorkerDied
from fedsilo.wire.messages import ExchangeRes, Failure, FitRes


@dataclass(frozen=True)
class Work:
    silo: str
    outcome: str = "fit"  # fit | kept | exchange | hang | die
    n: int = 1
    payload: bytes = b"ok"


class FakeBackend:
    def __init__(self, workers: int) -> None:
        self.count = workers
        self.log: list[tuple[str, int, str]] = []  # ("start", worker, silo) and ("replace", worker, "")
        self.running: dict[int, tuple[int, Work]] = {}
        self.handles = 0
        self.timeouts: list[float] = []

    def workers(self) -> int:
        return self.count

    def start(self, index: int, work: Work) -> int:
        assert index not in {i for i, _ in self.running.values()}, "a worker runs one job at a time"
        self.log.append(("start", index, work.silo))
        self.handles += 1
        self.running[self.handles] = (index, work)
        return self.handles

    def wait(self, running: Sequence[int], timeout: float) -> Sequence[int]:
        self.timeouts.append(timeout)
        return [h for h in sorted(running) if self.running[h][1].outcome != "hang"][:1]

    def reply(self, index: int, handle: int, silo: str) -> Reply:
        _, work = self.running.pop(handle)
        if work.outcome == "die":
            raise WorkerDied(f"worker {index} died")
        if work.outcome == "exchange":
            return ExchangeRes(silo, "step", work.payload)
        return FitRes(silo, {} if work.outcome == "kept" else {"w": np.zeros(1)}, work.n)

    def replace(self, index: int) -> None:
        self.log.append(("replace", index, ""))
        self.running = {h: (i, w) for h, (i, w) in self.running.items() if i != index}


def jobs(*works: Work) -> list[Job[Work]]:
    return [Job(w.silo, w) for w in works]


def starts(backend: FakeBackend) -> list[str]:
    return [silo for event, _, silo in backend.log if event == "start"]


def by_silo(replies: list[Reply]) -> dict[str, Reply]:
    return {r.silo: r for r in replies}


def reason(reply: Reply) -> str:
    assert isinstance(reply, Failure)
    return reply.reason


def test_free_jobs_go_largest_first_by_the_last_fits_sizes() -> None:
    backend = FakeBackend(1)
    dispatcher = Dispatcher(backend)
    list(dispatcher.run(jobs(Work("a", n=5), Work("b", n=20), Work("c", n=10)), timeout=5))
    backend.log.clear()
    list(dispatcher.run(jobs(Work("new"), Work("a"), Work("c"), Work("b")), timeout=5))
    assert starts(backend) == ["b", "c", "a", "new"]  # a silo never fitted yet goes last
    assert dispatcher.sizes == {"a": 1, "b": 1, "c": 1, "new": 1}


def test_a_worker_gets_its_next_job_before_its_reply_is_yielded() -> None:
    backend = FakeBackend(2)
    replies = Dispatcher(backend).run(jobs(Work("a"), Work("b"), Work("c")), timeout=5)
    assert next(replies).silo == "a"
    assert starts(backend) == ["a", "b", "c"]  # worker 0 took c before the consumer saw a's reply
    assert [r.silo for r in replies] == ["b", "c"]


def test_one_deadline_times_out_running_jobs_and_the_rest_were_never_started() -> None:
    backend = FakeBackend(2)
    work = jobs(Work("slow", "hang"), Work("stuck", "hang"), Work("late"))
    replies = by_silo(list(Dispatcher(backend).run(work, timeout=5)))
    for silo in ("slow", "stuck"):
        reply = replies[silo]
        assert isinstance(reply, Failure) and reply.kind == "timeout"
        assert reply.reason == "no reply within the round deadline of 5s"
    late = replies["late"]
    assert isinstance(late, Failure) and late.kind == "timeout"
    assert late.reason == "not started before the round deadline of 5s"
    assert sorted(i for event, i, _ in backend.log if event == "replace") == [0, 1]
    assert backend.timeouts and all(t <= 5 for t in backend.timeouts)


def test_the_deadline_is_one_for_the_whole_call_not_one_per_wait() -> None:
    backend = FakeBackend(2)
    work = jobs(Work("slow", "hang"), *(Work(f"s{i}") for i in range(6)))
    replies = list(Dispatcher(backend).run(work, timeout=5))
    assert len(replies) == 7 and sum(isinstance(r, FitRes) for r in replies) == 6
    assert backend.timeouts == sorted(backend.timeouts, reverse=True)  # what is left of the one deadline


def test_a_dying_worker_is_a_disconnect_and_free_jobs_go_on_on_its_replacement() -> None:
    backend = FakeBackend(1)
    replies = list(Dispatcher(backend).run(jobs(Work("a", "die"), Work("b")), timeout=5))
    assert isinstance(replies[0], Failure) and replies[0].kind == "disconnected"
    assert replies[0].reason == "worker 0 died"
    assert isinstance(replies[1], FitRes) and replies[1].silo == "b"
    assert backend.log == [("start", 0, "a"), ("replace", 0, ""), ("start", 0, "b")]


def secure_fits(backend: FakeBackend, dispatcher: Dispatcher[Work, int], silos: str) -> None:
    """Kept fits of ``silos``, one by one on the fake's workers: worker i % workers holds silo i."""
    list(dispatcher.run(jobs(*(Work(s, "kept") for s in silos)), timeout=5))
    assert all(dispatcher.holder[s] == i % backend.count for i, s in enumerate(silos))


def test_pinned_jobs_go_to_the_worker_holding_the_session() -> None:
    backend = FakeBackend(2)
    dispatcher = Dispatcher(backend)
    secure_fits(backend, dispatcher, "xyz")  # x, z on worker 0; y on worker 1
    backend.log.clear()
    step = dispatcher.exchange("step", {"z": b"1", "y": b"2", "x": b"3"}, 5, 100, lambda s, m: Work(s, "exchange"))
    assert all(isinstance(r, ExchangeRes) for r in step)
    assert sorted(backend.log) == [("start", 0, "x"), ("start", 0, "z"), ("start", 1, "y")]


def test_a_dead_holder_drops_the_sessions_it_held_and_the_others_answer() -> None:
    backend = FakeBackend(2)
    dispatcher = Dispatcher(backend)
    secure_fits(backend, dispatcher, "xyz")
    outcome = {"x": "die", "y": "exchange", "z": "exchange"}
    step = by_silo(list(dispatcher.exchange("step", {s: b"" for s in "xyz"}, 5, 100, lambda s, m: Work(s, outcome[s]))))
    assert isinstance(step["y"], ExchangeRes)
    for silo in "xz":
        reply = step[silo]
        assert isinstance(reply, Failure) and reply.kind == "disconnected"
    assert reason(step["z"]) == "its worker failed: worker 0 died"
    assert dispatcher.holder == {"y": 1}
    (again,) = dispatcher.exchange("step", {"x": b""}, 5, 100, lambda s, m: Work(s, "exchange"))
    assert isinstance(again, Failure) and again.reason.startswith("its worker was replaced since it trained")
    assert again.kind == "disconnected"
    secure_fits(backend, dispatcher, "x")  # x trains again: its new session is found
    (fresh,) = dispatcher.exchange("step", {"x": b""}, 5, 100, lambda s, m: Work(s, "exchange"))
    assert isinstance(fresh, ExchangeRes)


def test_a_silo_that_never_kept_a_session_is_an_error_as_its_own_agent_says() -> None:
    """Not a disconnect: nothing died; the silo was never asked to keep its update (the contract test's case)."""
    dispatcher = Dispatcher(FakeBackend(1))
    (reply,) = dispatcher.exchange("advertise", {"w": b""}, 5, 100, lambda s, m: Work(s, "exchange"))
    assert isinstance(reply, Failure) and reply.kind == "error"
    assert reply.reason == "no secure-aggregation session for step 'advertise' (no secagg fit this round on this silo)"


def test_an_exchange_reply_over_the_limit_is_rejected() -> None:
    backend = FakeBackend(1)
    dispatcher = Dispatcher(backend)
    secure_fits(backend, dispatcher, "x")
    (reply,) = dispatcher.exchange("advertise", {"x": b""}, 5, 3, lambda s, m: Work(s, "exchange", payload=b"four"))
    assert isinstance(reply, Failure) and reply.kind == "rejected"
    assert reply.reason == "advertise reply of 4 bytes is over 3"


def test_pinned_jobs_not_started_by_the_deadline_time_out() -> None:
    backend = FakeBackend(1)
    dispatcher = Dispatcher(backend)
    secure_fits(backend, dispatcher, "xy")
    outcome = {"x": "hang", "y": "exchange"}
    step = by_silo(list(dispatcher.exchange("step", {"x": b"", "y": b""}, 5, 100, lambda s, m: Work(s, outcome[s]))))
    assert reason(step["x"]) == "no reply within the step deadline of 5s"
    assert reason(step["y"]) == "not started before the step deadline of 5s"
    assert dispatcher.holder == {}  # worker 0 was replaced: its sessions are gone


@pytest.mark.parametrize("taken", [0, 1, 2])
def test_stopping_early_replaces_every_busy_worker(taken: int) -> None:
    backend = FakeBackend(2)
    replies = Dispatcher(backend).run(jobs(*(Work(s) for s in "abcd")), timeout=5)
    for _ in range(taken):
        next(replies)
    replies.close()
    replaced = sorted(i for event, i, _ in backend.log if event == "replace")
    assert replaced == ([] if taken == 0 else [0, 1])  # nothing started before the first next()
    assert backend.running == {}
