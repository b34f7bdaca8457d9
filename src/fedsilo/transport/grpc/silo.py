"""The silo's side: connect out to the server, hold a session, and answer its assignments with a silo endpoint.

A reader thread keeps the session open (reconnecting after a broken connection) and queues the
assignments the server pushes; the main thread downloads the model, runs the endpoint (the user's
training), uploads and submits. Transfers resume from the last byte the other side holds, and
are abandoned only when they stop making progress, never after a fixed time. Whether an upload is
too large is the server's decision: the silo always offers it, and a refusal ends the assignment.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from fedsilo.errors import ConnectionFailed, ProtocolError
from fedsilo.transport.base import SiloEndpoint
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc import fedsilo_pb2_grpc as pb_grpc
from fedsilo.transport.grpc.transfers import AssignmentGone, SiloTransfers, Watchdog, describe_rpc_error
from fedsilo.transport.grpc.wire import (
    CHANNEL_OPTIONS,
    CREDENTIAL_KEY,
    PROTOCOL,
    SILO_KEY,
    Tls,
    channel_credentials,
)
from fedsilo.transport.timing import CONNECT_TIMEOUT_S, HEARTBEAT_S, STALL_TIMEOUT_S
from fedsilo.wire.arrays import ArrayDict, to_bytes, views_of
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes

Log = Callable[[str], None]
FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)


@dataclass(frozen=True)
class SiloSettings:
    address: str
    name: str
    credential: str
    tls: Tls | None  # None only with --insecure
    task_sha256: str = ""
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    stall_timeout_s: float = STALL_TIMEOUT_S


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
        self.heartbeat_s = HEARTBEAT_S  # until the server says its own
        self.transfers = SiloTransfers(self._stub, self._metadata, settings.stall_timeout_s, self._over, self.log)

    # --- session -------------------------------------------------------------------------
    def _session_loop(self) -> None:
        """Keep a session open; put Assignments, Done, or a ConnectionFailed in the inbox."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        last_error = "no answer"
        while not self._stop.is_set():
            call = self._stub.Session(
                pb.Hello(protocol=PROTOCOL, task_sha256=self.settings.task_sha256), metadata=self._metadata
            )
            dog = Watchdog(call.cancel, max(3 * self.heartbeat_s, 5.0))
            try:
                for event in call:
                    dog.touch()
                    deadline = time.monotonic() + self.settings.connect_timeout_s  # we were connected
                    kind = event.WhichOneof("kind")
                    if kind == "welcome":
                        self.heartbeat_s = event.welcome.heartbeat_s or self.heartbeat_s
                        self._inbox.put(event.welcome)
                    elif kind in ("assignment", "done"):
                        self._inbox.put(getattr(event, kind))
                        if kind == "done":
                            self._over.set()
                            return
            except grpc.RpcError as exc:
                if exc.code() in FATAL:
                    self._inbox.put(ConnectionFailed(f"the server refused this silo: {describe_rpc_error(exc)}"))
                    return
                last_error = describe_rpc_error(exc)
            finally:
                dog.stop()
            if self._stop.is_set():
                return
            if time.monotonic() > deadline:
                self._inbox.put(
                    ConnectionFailed(
                        f"cannot reach the server at {self.settings.address} "
                        f"for {self.settings.connect_timeout_s:.0f}s ({last_error})",
                        "check the address, that the server runs, and the kit (`fedsilo doctor --kit KIT`)",
                    )
                )
                return
            time.sleep(0.5)

    def run(self) -> pb.Done:
        """Serve assignments until the server says the run is over; raises ConnectionFailed if it never can."""
        reader = threading.Thread(target=self._session_loop, daemon=True, name="fedsilo-session")
        reader.start()
        try:
            while True:
                item = self._inbox.get()
                if isinstance(item, ConnectionFailed):
                    raise item
                if isinstance(item, pb.Welcome):
                    self.log(f"connected to {self.settings.address} (experiment '{item.experiment}')")
                elif isinstance(item, pb.Done):
                    return item
                elif isinstance(item, pb.Assignment):
                    self._handle(item)
        finally:
            self._stop.set()
            self._channel.close()

    # --- one assignment--------------------------------------------------------------------
    def _handle(self, job: pb.Assignment) -> None:
        if job.kind == "secagg":
            self._handle_step(job)
            return
        try:
            params = views_of(self.transfers.download(job))
            reply = self._answer(job, params)
            del params
            self.log(_summary(job, reply))
            if isinstance(reply, FitRes):
                self.transfers.upload(job, to_bytes(reply.parameters))
                result = pb.Result(num_examples=reply.num_examples, metrics_json=json.dumps(dict(reply.metrics)))
            elif isinstance(reply, EvaluateRes):
                result = pb.Result(
                    num_examples=reply.num_examples, loss=reply.loss, metrics_json=json.dumps(dict(reply.metrics))
                )
            else:
                result = pb.Result(failure=reply.reason)
            result.assignment_id = job.assignment_id
            self.transfers.submit(result)
        except AssignmentGone as exc:
            self.log(f"round {job.round}: {job.kind} abandoned ({exc})")
        except Exception as exc:  # e.g. an update that cannot be serialized: say so, and stay up for the next round
            reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            self.log(f"round {job.round}: {job.kind} failed on this silo ({reason})")
            with contextlib.suppress(AssignmentGone):
                self.transfers.submit(pb.Result(assignment_id=job.assignment_id, failure=reason))

    def _answer(self, job: pb.Assignment, params: ArrayDict) -> FitRes | EvaluateRes | Failure:
        """The endpoint's reply, after parsing the server's instructions strictly (a typo is a failure)."""
        try:
            if job.kind == "fit":
                return self.endpoint.fit(FitIns(job.round, params, FitInstructions.from_json(job.config_json)))
            return self.endpoint.evaluate(
                EvaluateIns(job.round, params, EvaluateInstructions.from_json(job.config_json))
            )
        except ProtocolError as exc:
            return Failure(self.settings.name, exc.one_line())

    def _handle_step(self, job: pb.Assignment) -> None:
        """A secure-aggregation step: download the server's message, answer it, upload the answer."""
        try:
            reply = self.endpoint.exchange(job.step, bytes(self.transfers.download(job)))
            if isinstance(reply, Failure):
                self.log(f"secure aggregation {job.step} failed: {reply.reason}")
                self.transfers.submit(pb.Result(assignment_id=job.assignment_id, failure=reply.reason))
                return
            self.transfers.upload(job, reply)
            self.transfers.submit(pb.Result(assignment_id=job.assignment_id))
        except AssignmentGone as exc:
            self.log(f"secure aggregation {job.step} abandoned ({exc})")
        except Exception as exc:  # a transfer error: the server drops this silo from the step
            self.log(f"secure aggregation {job.step} failed on this silo ({type(exc).__name__}: {exc})")

def _summary(job: pb.Assignment, reply: FitRes | EvaluateRes | Failure) -> str:
    if isinstance(reply, Failure):
        return f"round {job.round}: {job.kind} failed: {reply.reason}"
    metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(reply.metrics.items())[:4])
    return f"round {job.round}: {job.kind} on {reply.num_examples} examples {metrics}".rstrip()


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
        raise ConnectionFailed(
            f"server at {settings.address}: {describe_rpc_error(exc)}",
            "check the address, that the server runs, and the kit (`fedsilo doctor --kit KIT`)",
        ) from None
    finally:
        channel.close()
