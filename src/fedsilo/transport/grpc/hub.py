"""The server's shared state between gRPC handler threads and the round loop.

Sessions (who is connected), the models being broadcast this round (serialized once, shared by
every silo's download), the tasks handed out and the uploads being received. Everything here is
bounded: a task's upload is allocated at its declared size, which may not exceed the model's
size plus a small allowance, and it is freed as soon as its result is taken.
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


@dataclass
class Upload:
    total: int
    sha256: str
    buf: bytearray
    received: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def complete(self) -> bool:
        return self.received == self.total and self.hasher.hexdigest() == self.sha256


@dataclass
class Task:
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


class Session:
    def __init__(self, silo: str, peer: str) -> None:
        self.silo = silo
        self.peer = peer
        self.events: queue.Queue[object] = queue.Queue()
        self.ended = threading.Event()


class Hub:
    def __init__(self, notify: Notify | None = None) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._left: dict[str, float] = {}
        self._seen: set[str] = set()
        self._models: dict[str, bytes] = {}
        self._tasks: dict[str, Task] = {}
        self.results: queue.Queue[tuple[str, Reply]] = queue.Queue()
        self._notify = notify or (lambda _message: None)

    # --- sessions -------------------------------------------------------------------------
    def open_session(self, silo: str, peer: str) -> Session:
        """Register ``silo``'s new session; an older one of the same silo is told to end."""
        session = Session(silo, peer)
        with self._lock:
            old = self._sessions.get(silo)
            self._sessions[silo] = session
            self._left.pop(silo, None)
            self._seen.add(silo)
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

    # --- models and tasks -----------------------------------------------------------------
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
        event: Callable[[Task], object],
        step: str = "",
    ) -> Task | None:
        """Hand ``silo`` a task (pushed on its session), or None when it is not connected."""
        task = Task(uuid.uuid4().hex, silo, kind, round, model_id, max_upload, step=step)
        with self._lock:
            session = self._sessions.get(silo)
            if session is None:
                return None
            self._tasks[task.id] = task
        session.events.put(event(task))
        return task

    def task_for(self, silo: str, task_id: str) -> Task | str:
        """The open task ``task_id`` of ``silo``, or why there is none (a silo cannot touch another's task)."""
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None or task.finished:
            return "no such task open (the round may be over)"
        if task.silo != silo:
            return f"task {task_id} belongs to another silo, not to '{silo}'"
        return task

    def model_for(self, silo: str, model_id: str) -> bytes | None:
        """The model bytes, only for a silo holding an open task on them."""
        with self._lock:
            if not any(t.silo == silo and t.model_id == model_id and not t.finished for t in self._tasks.values()):
                return None
            return self._models.get(model_id)

    def upload_for(self, task: Task, total: int, sha256: str) -> Upload:
        """The task's upload in progress when it is the same transfer; else a fresh one."""
        with self._lock:
            up = task.upload
            if up is None or up.total != total or up.sha256 != sha256:
                up = task.upload = Upload(total, sha256, bytearray(total))
            return up

    def finish(self, task: Task, reply: Reply | None) -> bool:
        """Close ``task`` (its upload is freed); its reply, if any, goes to the round. False if already closed."""
        with self._lock:
            if task.finished:
                return False
            task.finished = True
            task.upload = None
            self._tasks.pop(task.id, None)
        if reply is not None:
            self.results.put((task.id, reply))
        return True
