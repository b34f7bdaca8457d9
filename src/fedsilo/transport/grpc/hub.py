"""The server's shared state between gRPC handler threads and the round loop.

Sessions (who is connected), the models being broadcast this round (serialized once, shared by
every silo's download), the assignments handed out (one silo's work in a round: a fit, an
evaluation or a secure-aggregation step) and the uploads being received. Everything here is
bounded: an assignment's upload is allocated at its declared size, which may not exceed its
``max_upload`` (a header over it ends the assignment as rejected), and it is freed as soon as
its result is taken.

An assignment lives until it is finished, not as long as the session it was pushed on: a silo
that comes back on a new session (a broken link, a restarted process) is sent its open
assignments again. Finishing one without a reply (the round gave up on it) tells the silo to drop
it and ends the transfers still running for it, so that none holds a server thread.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from fedsilo.wire.messages import EvaluateRes, ExchangeRes, Failure, FitRes

Reply = FitRes | EvaluateRes | ExchangeRes | Failure
Notify = Callable[[str], None]
CancelEvent = Callable[["Assignment", str], object]  # the event telling a silo to drop an assignment


@dataclass
class Upload:
    total: int
    sha256: str
    buf: bytearray
    received: int = 0
    started: float = field(default_factory=time.monotonic)
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def complete(self) -> bool:
        return self.received == self.total and self.hasher.hexdigest() == self.sha256


@dataclass
class Assignment:
    """One silo's work in one call of the round loop, and its upload in progress."""

    id: str
    silo: str
    kind: str  # fit | evaluate | secagg
    round: int
    model_id: str  # for a secagg step: the step's message to this silo, downloaded like a model
    max_upload: int
    step: str = ""  # secagg only: the protocol step
    last_progress: float = field(default_factory=time.monotonic)
    upload: Upload | None = None
    finished: bool = False
    event: object = None  # what was pushed to the silo, pushed again on its next session
    calls: list[Callable[[], object]] = field(default_factory=list)  # cancels the transfers running for it


class Session:
    def __init__(self, silo: str, peer: str) -> None:
        self.silo = silo
        self.peer = peer
        self.events: queue.Queue[object] = queue.Queue()
        self.ended = threading.Event()


class Hub:
    def __init__(self, notify: Notify | None = None, cancel_event: CancelEvent | None = None) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._left: dict[str, float] = {}
        self._seen: set[str] = set()
        self._models: dict[str, bytes] = {}
        self._assignments: dict[str, Assignment] = {}
        self.results: queue.Queue[tuple[str, Reply]] = queue.Queue()
        self._notify = notify or (lambda _message: None)
        self._cancel_event = cancel_event

    # --- sessions -------------------------------------------------------------------------
    def open_session(self, silo: str, peer: str) -> Session:
        """Register ``silo``'s new session, with its open assignments pushed again; an older one is told to end."""
        session = Session(silo, peer)
        with self._lock:
            old = self._sessions.get(silo)
            self._sessions[silo] = session
            self._left.pop(silo, None)
            self._seen.add(silo)
            for job in self._assignments.values():
                if job.silo == silo and not job.finished:
                    session.events.put(job.event)
        if old is not None:
            old.events.put(None)
        self._notify(f"silo {silo} {'reconnected' if old else 'connected'} from {peer}")
        return session

    def close_session(self, session: Session) -> None:
        with self._lock:
            if self._sessions.get(session.silo) is not session:
                return  # replaced by a newer session: the silo is still connected
            del self._sessions[session.silo]
            self._left[session.silo] = time.monotonic()
        self._notify(f"silo {session.silo} disconnected")

    def connected(self) -> list[str]:
        with self._lock:
            return sorted(self._sessions)

    def has_seen(self, silo: str) -> bool:
        """Whether ``silo`` ever opened a session."""
        with self._lock:
            return silo in self._seen

    def gone_for(self, silo: str) -> float | None:
        """Seconds since ``silo``'s session ended, or None while it is connected."""
        with self._lock:
            if silo in self._sessions:
                return None
            left = self._left.get(silo)
        return time.monotonic() - left if left is not None else float("inf")

    def broadcast(self, event: object) -> list[Session]:
        with self._lock:
            sessions = list(self._sessions.values())
        for s in sessions:
            s.events.put(event)
        return sessions

    # --- models and assignments------------------------------------------------------------
    def add_model(self, data: bytes) -> str:
        model_id = uuid.uuid4().hex
        with self._lock:
            self._models[model_id] = data
        return model_id

    def drop_model(self, model_id: str) -> None:
        with self._lock:
            self._models.pop(model_id, None)

    def assign(
        self,
        silo: str,
        kind: str,
        round: int,
        model_id: str,
        max_upload: int,
        event: Callable[[Assignment], object],
        step: str = "",
    ) -> Assignment | None:
        """Hand ``silo`` an assignment (pushed on its session), or None when it is not connected."""
        job = Assignment(uuid.uuid4().hex, silo, kind, round, model_id, max_upload, step=step)
        job.event = event(job)
        with self._lock:  # with the session's lock held, so that a new session cannot miss it
            session = self._sessions.get(silo)
            if session is None:
                return None
            self._assignments[job.id] = job
            session.events.put(job.event)
        return job

    def assignment_for(self, silo: str, assignment_id: str) -> Assignment | str:
        """The open assignment of ``silo`` with that id, or why there is none (a silo cannot touch another's)."""
        with self._lock:
            job = self._assignments.get(assignment_id)
        if job is None or job.finished:
            return "no such assignment open (the round may be over)"
        if job.silo != silo:
            return f"assignment {assignment_id} belongs to another silo, not to '{silo}'"
        return job

    def model_for(self, silo: str, model_id: str) -> tuple[Assignment, bytes] | None:
        """The open assignment of ``silo`` on that model, and the model's bytes (None for anyone else)."""
        with self._lock:
            for job in self._assignments.values():
                if job.silo == silo and job.model_id == model_id and not job.finished:
                    data = self._models.get(model_id)
                    return None if data is None else (job, data)
            return None

    def watch(self, job: Assignment, cancel: Callable[[], object]) -> Callable[[], None]:
        """Call ``cancel`` (a transfer's) when ``job`` is finished; returns what stops watching."""
        with self._lock:
            if not job.finished:
                job.calls.append(cancel)
                return lambda: self._unwatch(job, cancel)
        cancel()
        return lambda: None

    def _unwatch(self, job: Assignment, cancel: Callable[[], object]) -> None:
        with self._lock:
            if cancel in job.calls:
                job.calls.remove(cancel)

    def upload_for(self, job: Assignment, total: int, sha256: str) -> Upload:
        """The assignment's upload in progress when it is the same transfer; else a fresh one."""
        with self._lock:
            up = job.upload
            if up is None or up.total != total or up.sha256 != sha256:
                up = job.upload = Upload(total, sha256, bytearray(total))
            return up

    def finish(self, job: Assignment, reply: Reply | None, why: str = "its round is over") -> bool:
        """Close ``job`` (its upload is freed, its transfers cut); False if already closed.

        Its reply, if any, goes to the round; without one the round gave up on it, and the silo is
        told ``why`` and drops it.
        """
        with self._lock:
            if job.finished:
                return False
            job.finished = True
            job.upload = None
            self._assignments.pop(job.id, None)
            calls, job.calls = job.calls, []
            session = self._sessions.get(job.silo)
            if reply is None and session is not None and self._cancel_event is not None:
                session.events.put(self._cancel_event(job, why))
        for cancel in calls:
            cancel()
        if reply is not None:
            self.results.put((job.id, reply))
        return True
