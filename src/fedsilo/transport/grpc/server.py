"""The orchestrator's side: the Transport the round loop drives, serving the gRPC service silos connect to.

The global model is serialized once per round and every selected silo downloads the same bytes;
replies are yielded as they arrive, and a silo that disconnects or stays silent past the deadline
becomes a Failure (an upload still arriving at a fair rate gets a bounded grace: ``deadlines.py``).
Connections come in through the :class:`~fedsilo.transport.grpc.gate.Gate` (capped per address,
timed until their first byte) to gRPC on a loopback port of its own (timed until TLS completes);
requests are parsed and guarded by ``handlers.py``.
"""

from __future__ import annotations

import functools
import hashlib
import queue
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc

from fedsilo.errors import ConnectionFailed, FedsiloError
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.deadlines import given_up
from fedsilo.transport.grpc.gate import Gate, connection_budget
from fedsilo.transport.grpc.handlers import add_to_server
from fedsilo.transport.grpc.hub import Assignment, Hub, Notify, Reply
from fedsilo.transport.grpc.servicer import CheckCredential, Servicer
from fedsilo.transport.grpc.wire import SERVER_OPTIONS, Tls, server_credentials
from fedsilo.transport.timing import ServerLimits
from fedsilo.wire.arrays import ArrayDict, to_bytes
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes

UPLOAD_ALLOWANCE = 256 * 1024  # an update's header may differ a little from the global model's

__all__ = ["CheckCredential", "GrpcServerTransport", "ServerLimits", "run_end", "wait_until"]


class GrpcServerTransport:
    """The round loop's view of connected silos: broadcast a model, yield replies by the deadline."""

    def __init__(
        self,
        address: str,
        experiment: str,
        check: CheckCredential,
        tls: Tls | None,
        task_sha256: str = "",
        limits: ServerLimits | None = None,
        max_silos: int = 64,
        notify: Notify | None = None,
    ) -> None:
        self.limits = limits = limits or ServerLimits()
        self._notify = notify or (lambda _message: None)
        self.hub = Hub(notify, cancel_event=_cancel_event)
        try:
            self._gate = Gate(address, limits.connections_per_peer, limits.handshake_timeout_s, self._notify)
        except (OSError, ValueError) as exc:
            raise ConnectionFailed(f"cannot listen on {address}: {exc}", "is another server using that port?") from None
        self.port = self._gate.port
        self._server = self._grpc_server(limits, max_silos)
        servicer = Servicer(
            self.hub, experiment, check, task_sha256, limits.heartbeat_s, tls is not None, self._gate.peer_of
        )
        add_to_server(servicer, self._server, self._notify)
        local = "127.0.0.1:0"  # only the gate connects here
        backend = (
            self._server.add_insecure_port(local)
            if tls is None
            else self._server.add_secure_port(local, server_credentials(tls))
        )
        self._server.start()
        self._gate.start(backend)
        self._closed = False

    @staticmethod
    def _grpc_server(limits: ServerLimits, max_silos: int) -> grpc.Server:
        options = [
            *SERVER_OPTIONS,
            ("grpc.server_handshake_timeout_ms", int(limits.handshake_timeout_s * 1000)),
            ("grpc.max_allowed_incoming_connections", connection_budget()),
        ]
        return grpc.server(
            futures.ThreadPoolExecutor(max_workers=3 * max_silos + 8, thread_name_prefix="fedsilo-grpc"),
            options=options,
            maximum_concurrent_rpcs=3 * max_silos + 8,
        )

    def available(self) -> list[str]:
        return self.hub.connected()

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        for reply in self._round("fit", silos, ins.round, ins.parameters, ins.instructions.to_json(), timeout):
            assert isinstance(reply, FitRes | Failure)
            yield reply

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        for reply in self._round("evaluate", silos, ins.round, ins.parameters, ins.instructions.to_json(), timeout):
            assert isinstance(reply, EvaluateRes | Failure)
            yield reply

    def exchange(
        self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply_bytes: int
    ) -> Iterator[ExchangeRes | Failure]:
        """One secure-aggregation step: each silo downloads only its own message and uploads its reply.

        The same machinery as a fit (chunks, resumable transfers, SHA-256, deadlines, a silo may touch
        only its own assignment), with the reply bounded by ``max_reply_bytes``.
        """

        def event(job: Assignment, data: bytes) -> Any:
            return pb.Event(
                assignment=pb.Assignment(
                    assignment_id=job.id,
                    kind="secagg",
                    config_json="{}",
                    model_id=job.model_id,
                    model_bytes=len(data),
                    model_sha256=hashlib.sha256(data).hexdigest(),
                    max_upload_bytes=job.max_upload,
                    step=step,
                )
            )

        pending: dict[str, Assignment] = {}
        models = []
        try:
            for silo, data in messages.items():
                models.append(self.hub.add_model(data))
                make = functools.partial(event, data=data)
                job = self.hub.assign(silo, "secagg", 0, models[-1], max_reply_bytes, make, step=step)
                if job is None:
                    yield Failure(silo, "not connected at this secure-aggregation step", "disconnected")
                else:
                    pending[job.id] = job
            for reply in self._gather(pending, time.monotonic() + timeout):
                assert isinstance(reply, ExchangeRes | Failure)
                yield reply
        finally:
            for job in pending.values():
                self.hub.finish(job, None)
            for model_id in models:
                self.hub.drop_model(model_id)

    def _round(
        self, kind: str, silos: Sequence[str], rnd: int, params: ArrayDict, instructions: str, timeout: float
    ) -> Iterator[Reply]:
        data = to_bytes(params)  # serialized once, downloaded by every silo
        model_id = self.hub.add_model(data)
        digest = hashlib.sha256(data).hexdigest()

        def event(job: Assignment) -> Any:
            return pb.Event(
                assignment=pb.Assignment(
                    assignment_id=job.id,
                    kind=kind,
                    round=rnd,
                    config_json=instructions,
                    model_id=model_id,
                    model_bytes=len(data),
                    model_sha256=digest,
                    max_upload_bytes=job.max_upload,
                )
            )

        pending: dict[str, Assignment] = {}
        try:
            for silo in silos:
                job = self.hub.assign(silo, kind, rnd, model_id, len(data) + UPLOAD_ALLOWANCE, event)
                if job is None:
                    yield Failure(silo, "not connected when the round started", "disconnected")
                else:
                    pending[job.id] = job
            yield from self._gather(pending, time.monotonic() + timeout)
        finally:
            for job in pending.values():
                self.hub.finish(job, None)
            self.hub.drop_model(model_id)

    def _gather(self, pending: dict[str, Assignment], deadline: float) -> Iterator[Reply]:
        """Replies as they come; an assignment the round gives up on (``deadlines.given_up``) is a Failure."""
        while pending:
            try:
                job_id, reply = self.hub.results.get(timeout=0.1)
            except queue.Empty:
                pass
            else:
                if pending.pop(job_id, None) is not None:
                    yield reply
            now = time.monotonic()
            for job in list(pending.values()):
                failure = given_up(job, now, deadline, self.hub.gone_for(job.silo), self.limits)
                if failure is not None and self.hub.finish(job, None, failure.reason):
                    del pending[job.id]
                    yield failure

    def close(self, reason: str = "the run is over", error: bool = False) -> None:
        """Tell every silo the run is over, let the sessions end, then stop serving. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        sessions = self.hub.broadcast(pb.Event(done=pb.Done(reason=reason, error=error)))
        deadline = time.monotonic() + 5.0
        for s in sessions:
            s.ended.wait(max(0.0, deadline - time.monotonic()))
        self._server.stop(grace=1.0).wait(5.0)
        self._gate.close()


def _cancel_event(job: Assignment, why: str) -> Any:
    return pb.Event(cancel=pb.Cancel(assignment_id=job.id, reason=why))


def run_end(failure: BaseException | None) -> tuple[str, bool]:
    """What silos are told when the run ends: (reason, error).

    A failure is named by its kind, not its message: the server's message may name other silos and
    what went wrong at them, which a silo must not learn (its operator reads the server's output).
    """
    if failure is None:
        return "the run is over", False
    if isinstance(failure, KeyboardInterrupt):
        return "the server was interrupted (it can resume the run with --resume)", True
    if isinstance(failure, FedsiloError):
        what = (type(failure).__doc__ or "").strip().splitlines()[0].rstrip(".")
        return f"the run failed on the server: {what} ({type(failure).__name__}, exit code {failure.exit_code})", True
    return f"the run failed on the server: an internal error ({type(failure).__name__})", True


def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (tests and the processes runtime use it)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()
