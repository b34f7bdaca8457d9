"""The one dispatcher of silos' jobs onto a pool of workers (local worker processes, or Ray actors).

The rules are the same whatever carries the jobs, so they are written once, here, with no
multiprocessing or Ray in sight; each pool implements the small :class:`Backend` protocol (start a
job on a worker, wait for replies, read one, replace a worker) and passes its jobs in.

- A free job may run on any worker: free jobs go out largest silo first (by the example count its
  last fit reported), each to whichever worker is idle, so the workers finish together.
- A pinned job goes only to its worker: a secure-aggregation step must reach the worker that holds
  the silo's session (:attr:`Dispatcher.holder`, learned from fit replies without parameters).
- A worker runs one job at a time. Once its reply is read it gets its next job *before* the reply
  is yielded, so it works while the server folds the reply in (the local pool writes replies into
  two result slots in turn for this reason).
- One deadline covers the whole call. At the deadline every running job is a timeout (its worker
  is replaced, so that no late reply reaches a later call) and every job not started is one too.
- A worker that dies is replaced: its job is a disconnect, and so are the jobs still pinned to it
  (their sessions died with it); free jobs go on, on the fresh worker.
- If the consumer stops early, every worker still busy is replaced, for the same reason.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from fedsilo.wire.messages import EvaluateRes, ExchangeRes, Failure, FitRes

Reply = FitRes | EvaluateRes | ExchangeRes | Failure
NO_SESSION = "no secure-aggregation session for step '{step}' (no secagg fit this round on this silo)"
W = TypeVar("W")  # a backend's description of one job (a pipe message, a Ray call)
W_contra = TypeVar("W_contra", contravariant=True)
H = TypeVar("H", bound=Hashable)  # what a backend waits on while a job runs (a pipe, an object ref)


class WorkerDied(Exception):
    """Raised by :meth:`Backend.reply` when the worker went away; the message says how."""


@dataclass(frozen=True)
class Job(Generic[W]):
    """One silo's work: ``worker`` pins it to that worker; ``None`` lets any idle worker run it."""

    silo: str
    work: W
    worker: int | None = None


class Backend(Protocol[W_contra, H]):
    """How one kind of pool carries jobs: the only part that knows about processes or Ray."""

    def workers(self) -> int:
        """How many workers there are (numbered from 0)."""
        ...

    def start(self, index: int, work: W_contra) -> H:
        """Send ``work`` to worker ``index``, which is idle; return what to wait on for its reply."""
        ...

    def wait(self, running: Sequence[H], timeout: float) -> Sequence[H]:
        """Those of ``running`` with a reply, waiting up to ``timeout`` seconds; none at the timeout."""
        ...

    def reply(self, index: int, handle: H, silo: str) -> Reply:
        """The reply behind ``handle``; raises :class:`WorkerDied` if the worker went away."""
        ...

    def replace(self, index: int) -> None:
        """Stop worker ``index`` now, whatever it is doing, and start a fresh one in its place."""
        ...


class Dispatcher(Generic[W, H]):
    """Runs calls of jobs on one backend, remembering silos' sizes and where their sessions are."""

    def __init__(self, backend: Backend[W, H]) -> None:
        self.backend = backend
        self.sizes: dict[str, int] = {}  # silo -> examples its last fit reported: the order of free jobs
        self.holder: dict[str, int] = {}  # silo -> the worker holding its secure-aggregation session
        self.lost: set[str] = set()  # silos whose session died with a replaced worker (until they fit again)

    def run(self, jobs: Sequence[Job[W]], timeout: float, deadline: str = "round") -> Iterator[Reply]:
        """Yield one reply per job, as they arrive, all within ``timeout`` (``deadline`` names it)."""
        return _Call(self, jobs, timeout, deadline).replies()

    def exchange(
        self,
        step: str,
        messages: Mapping[str, bytes],
        timeout: float,
        max_reply_bytes: int,
        work: Callable[[str, bytes], W],
    ) -> Iterator[ExchangeRes | Failure]:
        """A protocol step: each silo's message, as ``work(silo, message)``, to the worker holding its session."""
        for silo in messages:
            if silo in self.lost:
                yield Failure(silo, "its worker was replaced since it trained: the session is gone", "disconnected")
            elif silo not in self.holder:  # as the silo's own agent answers, in every transport
                yield Failure(silo, NO_SESSION.format(step=step), "error")
        jobs = [Job(s, work(s, m), self.holder[s]) for s, m in messages.items() if s in self.holder]
        for reply in self.run(jobs, timeout, "step"):
            assert isinstance(reply, ExchangeRes | Failure), "an exchange job answers with an exchange reply"
            if isinstance(reply, ExchangeRes) and len(reply.payload) > max_reply_bytes:
                reason = f"{step} reply of {len(reply.payload)} bytes is over {max_reply_bytes}"
                reply = Failure(reply.silo, reason, "rejected")
            yield reply

    def note(self, reply: Reply, index: int) -> None:
        """Learn from a reply: a fit's size, and whether its update stayed in the worker (secure aggregation)."""
        if isinstance(reply, FitRes):
            self.sizes[reply.silo] = reply.num_examples
            self.lost.discard(reply.silo)
            if reply.parameters:
                self.holder.pop(reply.silo, None)
            else:
                self.holder[reply.silo] = index

    def replace(self, index: int) -> None:
        self.lost |= {s for s, i in self.holder.items() if i == index}  # their sessions die with it
        self.holder = {s: i for s, i in self.holder.items() if i != index}
        self.backend.replace(index)


class _Call(Generic[W, H]):
    """One call's jobs: those not started yet, and the job each busy worker runs."""

    def __init__(self, dispatcher: Dispatcher[W, H], jobs: Sequence[Job[W]], timeout: float, deadline: str) -> None:
        self.dispatcher, self.backend = dispatcher, dispatcher.backend
        sizes = dispatcher.sizes
        self.free = deque(sorted((j for j in jobs if j.worker is None), key=lambda j: -sizes.get(j.silo, 0)))
        self.pinned: dict[int, deque[Job[W]]] = {}
        for job in jobs:
            if job.worker is not None:
                self.pinned.setdefault(job.worker, deque()).append(job)
        self.busy: dict[H, tuple[int, Job[W]]] = {}
        self.timeout, self.deadline = timeout, deadline

    def replies(self) -> Iterator[Reply]:
        end = time.monotonic() + self.timeout
        try:
            for index in range(self.backend.workers()):
                self.start_next(index)
            while self.busy:
                ready = self.backend.wait(list(self.busy), max(0.0, end - time.monotonic()))
                if not ready:
                    yield from self.expire()
                    return
                for handle in ready:
                    yield from self.collect(handle)
        finally:  # the consumer stopped early: no stale reply may reach the next call
            for index, _ in list(self.busy.values()):
                self.dispatcher.replace(index)

    def start_next(self, index: int) -> None:
        """Give worker ``index`` its next job: one pinned to it first, else the largest free one."""
        queue = self.pinned.get(index)
        job = queue.popleft() if queue else self.free.popleft() if self.free else None
        if job is not None:
            self.busy[self.backend.start(index, job.work)] = (index, job)

    def collect(self, handle: H) -> Iterator[Reply]:
        index, job = self.busy.pop(handle)
        try:
            reply = self.backend.reply(index, handle, job.silo)
        except WorkerDied as died:
            yield from self.lost(index, job, str(died))
            return
        self.dispatcher.note(reply, index)
        self.start_next(index)  # keep the worker busy while the server folds in this reply
        yield reply

    def lost(self, index: int, job: Job[W], reason: str) -> Iterator[Failure]:
        """Worker ``index`` died: its job and the jobs pinned to it fail; free jobs go to its replacement."""
        stranded = self.pinned.pop(index, deque())
        self.dispatcher.replace(index)
        self.start_next(index)
        yield Failure(job.silo, reason, "disconnected")
        for other in stranded:
            yield Failure(other.silo, f"its worker failed: {reason}", "disconnected")

    def expire(self) -> Iterator[Failure]:
        """The deadline passed: running jobs time out (their workers are replaced); the rest never started."""
        limit = f"the {self.deadline} deadline of {self.timeout:.0f}s"
        for handle, (index, job) in list(self.busy.items()):
            del self.busy[handle]
            self.dispatcher.replace(index)
            yield Failure(job.silo, f"no reply within {limit}", "timeout")
        waiting = [*self.free, *(job for queue in self.pinned.values() for job in queue)]
        self.free.clear()
        self.pinned.clear()
        for job in waiting:
            yield Failure(job.silo, f"not started before {limit}", "timeout")
