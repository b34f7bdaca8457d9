"""One secure-aggregation step over the simulation's worker pipes.

A silo's protocol state lives in the worker that trained it this round, so each silo's message
goes to that worker; one worker answers its silos one after another, different workers in parallel.
Every wait has the step's deadline. A worker that dies or misses the deadline is replaced, and the
silos it held are reported as dropped (their sessions died with it): the protocol then goes on
without them, as it would for silos whose machines went down.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing import connection
from typing import Any, Protocol

from fedsilo.wire.messages import ExchangeRes, Failure, FailureKind


class PipeWorker(Protocol):
    index: int
    conn: connection.Connection
    process: Any


def pipe_exchange(
    routes: Mapping[str, PipeWorker],
    step: str,
    messages: Mapping[str, bytes],
    call_id: int,
    timeout: float,
    max_reply_bytes: int,
    replace: Callable[[Any], Any],
) -> Iterator[ExchangeRes | Failure]:
    """Send each silo's message to its worker in ``routes``; yield the replies as they come."""
    for silo in messages.keys() - routes.keys():
        yield Failure(silo, "its worker was replaced since it trained: the session is gone", "disconnected")
    jobs = [("exchange", call_id, silo, step, messages[silo]) for silo in messages if silo in routes]
    for reply in _run_jobs(routes, jobs, timeout, replace):
        if isinstance(reply, ExchangeRes) and len(reply.payload) > max_reply_bytes:
            reply = Failure(
                reply.silo, f"{step} reply of {len(reply.payload)} bytes is over {max_reply_bytes}", "rejected"
            )
        yield reply


def _run_jobs(
    routes: Mapping[str, PipeWorker],
    jobs: Sequence[tuple[Any, ...]],
    timeout: float,
    replace: Callable[[Any], Any],
) -> Iterator[ExchangeRes | Failure]:
    """One job at a time per worker, workers in parallel, all under one deadline."""
    queues: dict[int, deque[tuple[Any, ...]]] = {}
    workers: dict[int, PipeWorker] = {}
    for job in jobs:
        worker = routes[job[2]]
        queues.setdefault(worker.index, deque()).append(job)
        workers[worker.index] = worker
    busy: dict[connection.Connection, tuple[PipeWorker, str]] = {}
    deadline = time.monotonic() + timeout

    def dispatch(index: int) -> None:
        if queues[index]:
            job = queues[index].popleft()
            with contextlib.suppress(OSError):  # a worker dead since it trained: its pipe reads EOF below
                workers[index].conn.send(job)
            busy[workers[index].conn] = (workers[index], job[2])

    def abandon(worker: PipeWorker, silo: str, reason: str, kind: FailureKind) -> Iterator[Failure]:
        """The worker is gone or stuck: its silo and every silo still queued on it drop out."""
        yield Failure(silo, reason, kind)
        while queues[worker.index]:
            yield Failure(queues[worker.index].popleft()[2], f"its worker failed: {reason}", kind)
        replace(worker)

    try:
        for index in queues:
            dispatch(index)
        while busy:
            ready = connection.wait(list(busy), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                for worker, silo in list(busy.values()):
                    del busy[worker.conn]
                    yield from abandon(worker, silo, f"no reply within the step deadline of {timeout:.0f}s", "timeout")
                return
            for conn in ready:
                worker, silo = busy.pop(conn)  # type: ignore[call-overload]
                try:
                    msg = worker.conn.recv()
                except (EOFError, OSError):
                    worker.process.join(5)
                    reason = f"its worker process died (exit code {worker.process.exitcode})"
                    yield from abandon(worker, silo, reason, "disconnected")
                    continue
                dispatch(worker.index)
                yield ExchangeRes(silo, jobs[0][3], msg[3]) if msg[0] == "exchanged" else Failure(silo, msg[3], msg[4])
    finally:
        for worker, _ in list(busy.values()):  # the caller stopped early: no stale reply may reach the next call
            replace(worker)
