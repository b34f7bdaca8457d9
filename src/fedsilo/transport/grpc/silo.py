"""The silo's side: connect out to the server, hold a session, and answer its assignments with a silo endpoint.

A reader thread keeps the session open (reconnecting after a broken connection) and hands the
assignments the server pushes to a :class:`~fedsilo.transport.grpc.work.Worker`, which downloads
the model, runs the endpoint (the user's training), uploads and submits, one assignment at a time.
An assignment pushed again on a new session (after a broken link) is skipped if this process has
it already; one the server cancels is dropped. Transfers resume from the last byte the other side
holds, and are abandoned only when they stop making progress, never after a fixed time. Whether
an upload is too large is the server's decision: the silo always offers it, and a refusal ends
the assignment. The run ends with the server's Done (an error makes it a
:class:`~fedsilo.errors.RunEnded`), or with :class:`~fedsilo.errors.ConnectionFailed` when the
server cannot be reached or is gone for good.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from fedsilo.errors import ConnectionFailed
from fedsilo.transport.base import SiloEndpoint
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc import fedsilo_pb2_grpc as pb_grpc
from fedsilo.transport.grpc.diagnose import hint
from fedsilo.transport.grpc.transfers import SiloTransfers, Watchdog, describe_rpc_error
from fedsilo.transport.grpc.wire import (
    CHANNEL_OPTIONS,
    CREDENTIAL_KEY,
    PROTOCOL,
    SILO_KEY,
    Tls,
    channel_credentials,
)
from fedsilo.transport.grpc.work import Worker
from fedsilo.transport.timing import CONNECT_TIMEOUT_S, EXIT_GRACE_S, HEARTBEAT_S, STALL_TIMEOUT_S

Log = Callable[[str], None]
FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
REMEMBERED = 4096  # assignment ids a silo remembers having taken (an id pushed again is skipped)
KIT_FIX = "check the address, that the server runs, and the kit (`fedsilo doctor --kit KIT`)"


@dataclass(frozen=True)
class SiloSettings:
    address: str
    name: str
    credential: str
    tls: Tls | None  # None only with --insecure
    task_sha256: str = ""
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    stall_timeout_s: float = STALL_TIMEOUT_S
    max_model_bytes: int | None = None  # the most a fit/evaluate model may take (None: not bounded)
    exit_grace_s: float = EXIT_GRACE_S
    diagnose: Callable[[], str] | None = field(default=None, compare=False)  # what is wrong with the kit, or ''


def open_channel(settings: SiloSettings) -> grpc.Channel:
    if settings.tls is None:
        return grpc.insecure_channel(settings.address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(settings.address, channel_credentials(settings.tls), options=CHANNEL_OPTIONS)


class SiloRunner:
    def __init__(self, endpoint: SiloEndpoint, settings: SiloSettings, log: Log | None = None) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.log = log or (lambda _m: None)
        self._channel = open_channel(settings)
        self._stub = pb_grpc.OrchestratorStub(self._channel)
        self._metadata: list[tuple[str, str]] = [(CREDENTIAL_KEY, settings.credential), (SILO_KEY, settings.name)]
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._over = threading.Event()  # the server said the run is over: abandon work in progress
        self._taken: OrderedDict[str, None] = OrderedDict()
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.heartbeat_s = HEARTBEAT_S  # until the server says its own
        self.transfers = SiloTransfers(
            self._stub, self._metadata, settings.stall_timeout_s, self._over, self.log, self.cancelled
        )

    def cancelled(self, assignment_id: str) -> bool:
        with self._lock:
            return assignment_id in self._cancelled

    # --- session -------------------------------------------------------------------------
    def _session_loop(self) -> None:
        """Keep a session open; put Assignments, Done, or a ConnectionFailed in the inbox."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        last_error, connected = "no answer", False
        while not self._stop.is_set():
            call = self._stub.Session(
                pb.Hello(protocol=PROTOCOL, task_sha256=self.settings.task_sha256), metadata=self._metadata
            )
            dog = Watchdog(call.cancel, max(3 * self.heartbeat_s, 5.0))
            try:
                for event in call:
                    dog.touch()
                    deadline, connected = time.monotonic() + self.settings.connect_timeout_s, True
                    if self._event(event):
                        return
            except grpc.RpcError as exc:
                if exc.code() in FATAL:
                    refused = f"the server refused this silo: {describe_rpc_error(exc)}"
                    self._inbox.put(ConnectionFailed(refused, KIT_FIX))
                    return
                last_error = describe_rpc_error(exc)
            finally:
                dog.stop()
            if self._stop.is_set():
                return
            if time.monotonic() > deadline:
                self._inbox.put(self._unreachable(last_error, connected))
                return
            time.sleep(0.5)

    def _event(self, event: pb.Event) -> bool:
        """Handle one event of the session; True when it is the last (the run is over)."""
        kind = event.WhichOneof("kind")
        if kind == "welcome":
            self.heartbeat_s = event.welcome.heartbeat_s or self.heartbeat_s
            self._inbox.put(event.welcome)
        elif kind == "cancel":
            with self._lock:
                _remember(self._cancelled, event.cancel.assignment_id)
            self.log(f"assignment {event.cancel.assignment_id[:8]} cancelled by the server ({event.cancel.reason})")
        elif kind in ("assignment", "done"):
            self._inbox.put(getattr(event, kind))
            if kind == "done":
                self._over.set()
                return True
        return False

    def _unreachable(self, last_error: str, connected: bool) -> ConnectionFailed:
        """Why the session cannot be had, naming a TLS mix-up or the kit's problem when that is the cause."""
        where, waited = self.settings.address, f"{self.settings.connect_timeout_s:.0f}s"
        if connected:
            return ConnectionFailed(
                f"lost the server at {where}: it went away without ending the run and did not come back "
                f"within {waited} ({last_error})",
                "when the server is back (`fedsilo server --resume RUN_DIR --kit KIT`), start this silo again",
            )
        own = self.settings.diagnose() if self.settings.diagnose else ""
        causes = [c for c in (own, hint(where, self.settings.tls, last_error)) if c]
        because = f": {'; '.join(causes)}" if causes else ""
        return ConnectionFailed(f"cannot reach the server at {where} for {waited} ({last_error}){because}", KIT_FIX)

    def run(self) -> pb.Done:
        """Serve assignments until the server says the run is over; raises ConnectionFailed if it never can."""
        reader = threading.Thread(target=self._session_loop, daemon=True, name="fedsilo-session")
        worker = Worker(
            self.settings.name, self.endpoint, self.transfers, self.settings.max_model_bytes, self.cancelled, self.log
        )
        reader.start()
        try:
            while True:
                item = self._inbox.get()
                if isinstance(item, ConnectionFailed):
                    raise item
                if isinstance(item, pb.Welcome):
                    self.log(f"connected to {self.settings.address} (experiment '{item.experiment}')")
                elif isinstance(item, pb.Done):
                    self._wind_down(worker)
                    return item
                elif isinstance(item, pb.Assignment):
                    self._take(worker, item)
        finally:
            self._stop.set()
            self._channel.close()

    def _take(self, worker: Worker, job: pb.Assignment) -> None:
        """Hand ``job`` to the worker, unless this process has it already (pushed again on a new session)."""
        if job.assignment_id in self._taken:
            self.log(f"round {job.round}: {job.step or job.kind} sent again after a reconnect; already in hand")
            return
        _remember(self._taken, job.assignment_id)
        worker.put(job)

    def _wind_down(self, worker: Worker) -> None:
        """The run is over: give the assignment in hand ``exit_grace_s``, then leave it (a thread cannot be stopped)."""
        job = worker.current
        if not worker.stop(self.settings.exit_grace_s) and job is not None:
            self.log(
                f"round {job.round}: {job.step or job.kind} still running {self.settings.exit_grace_s:g}s after "
                "the run ended; exiting without it"
            )


def _remember(ids: OrderedDict[str, None], assignment_id: str) -> None:
    ids[assignment_id] = None
    while len(ids) > REMEMBERED:
        ids.popitem(last=False)


def probe(settings: SiloSettings, timeout: float = 10.0) -> pb.ProbeReply:
    """One call to the server without a session (for `fedsilo doctor`); raises ConnectionFailed."""
    channel = open_channel(settings)
    try:
        stub = pb_grpc.OrchestratorStub(channel)
        return stub.Probe(
            pb.ProbeRequest(),
            metadata=[(CREDENTIAL_KEY, settings.credential), (SILO_KEY, settings.name)],
            timeout=timeout,
        )
    except grpc.RpcError as exc:
        raise ConnectionFailed(f"server at {settings.address}: {describe_rpc_error(exc)}", KIT_FIX) from None
    finally:
        channel.close()
