"""The gRPC service silos call: sessions, downloads, uploads and results, each checked for who is calling.

Identity is checked on every call: in TLS mode the silo is the common name of the certificate it
presented (signed by the experiment's CA, or the handshake already failed), and its credential
must match; a silo can only touch its own assignments. Everything a silo sends is bounded: messages
by gRPC's size limit, an upload by its assignment's ``max_upload`` (an upload declared larger ends
the assignment as ``rejected``, decided here and not by the silo), JSON by ``MAX_JSON_BYTES``, open
transfers by ``TRANSFERS_PER_SILO``, and a transfer for an assignment lasts no longer than the
assignment (finishing it cuts the call). A refusal is a :class:`~fedsilo.transport.grpc.handlers.Refused`:
a status and one line, which ``handlers.py`` turns into the call's end.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import grpc

from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.handlers import Refused
from fedsilo.transport.grpc.hub import Assignment, Hub, Reply
from fedsilo.transport.grpc.wire import CHUNK_BYTES, CREDENTIAL_KEY, MAX_JSON_BYTES, PROTOCOL, SILO_KEY
from fedsilo.wire.arrays import views_of
from fedsilo.wire.messages import EvaluateRes, ExchangeRes, Failure, FitRes, clean_metrics

CheckCredential = Callable[[str, str], bool]  # (silo, credential) -> accepted
PeerOf = Callable[[str], str]  # gRPC's name of the caller -> the address it really connects from
TRANSFERS_PER_SILO = 2  # concurrent downloads + uploads one silo may hold open (each holds a server thread)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    raise Refused(code, message)


class Servicer:
    def __init__(
        self,
        hub: Hub,
        experiment: str,
        check: CheckCredential,
        task_sha256: str,
        heartbeat_s: float,
        tls: bool,
        peer_of: PeerOf = str,
    ) -> None:
        self.hub = hub
        self.peer_of = peer_of
        self.experiment = experiment
        self.check = check
        self.task_sha256 = task_sha256
        self.heartbeat_s = heartbeat_s
        self.tls = tls
        self._transfers: Counter[str] = Counter()
        self._transfers_lock = threading.Lock()

    @contextmanager
    def _transfer_slot(self, context: grpc.ServicerContext, silo: str) -> Iterator[None]:
        """At most ``TRANSFERS_PER_SILO`` open transfers per silo, so that one silo cannot take every server thread."""
        with self._transfers_lock:
            if self._transfers[silo] >= TRANSFERS_PER_SILO:
                busy = True
            else:
                busy = False
                self._transfers[silo] += 1
        if busy:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, f"silo '{silo}' already has transfers in progress")
        try:
            yield
        finally:
            with self._transfers_lock:
                self._transfers[silo] -= 1

    def identify(self, context: grpc.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata())
        if self.tls:
            names = context.auth_context().get("x509_common_name") or []
            if not names:
                _abort(context, grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
            silo = names[0].decode()
        else:
            silo = str(metadata.get(SILO_KEY, ""))
        if not self.check(silo, str(metadata.get(CREDENTIAL_KEY, ""))):
            _abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"silo '{silo}' is not part of experiment '{self.experiment}' or its credential is wrong",
            )
        return silo

    def _assignment(self, context: grpc.ServicerContext, silo: str, assignment_id: str) -> Assignment:
        found = self.hub.assignment_for(silo, assignment_id)
        if isinstance(found, str):
            _abort(
                context, grpc.StatusCode.PERMISSION_DENIED if "another" in found else grpc.StatusCode.NOT_FOUND, found
            )
        return found

    def Session(self, request: pb.Hello, context: grpc.ServicerContext) -> Iterator[pb.Event]:  # noqa: N802
        silo = self.identify(context)
        if request.protocol != PROTOCOL:
            _abort(
                context, grpc.StatusCode.FAILED_PRECONDITION, f"protocol {request.protocol}, server speaks {PROTOCOL}"
            )
        if self.task_sha256 and request.task_sha256 != self.task_sha256:
            _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "this silo's task module differs from the server's (sha256 mismatch): use the task.py of this kit",
            )
        session = self.hub.open_session(silo, self.peer_of(context.peer()))
        context.add_callback(session.ended.set)
        try:
            yield pb.Event(
                welcome=pb.Welcome(
                    experiment=self.experiment,
                    heartbeat_s=self.heartbeat_s,
                    server_time=time.time(),
                    chunk_bytes=CHUNK_BYTES,
                )
            )
            while not session.ended.is_set():
                try:
                    event = session.events.get(timeout=self.heartbeat_s)
                except queue.Empty:
                    event = pb.Event(ping=pb.Ping(server_time=time.time()))
                if event is None:
                    return  # a newer session of this silo replaced this one
                assert isinstance(event, pb.Event)
                yield event
                if event.HasField("done"):
                    return
        finally:
            self.hub.close_session(session)

    def Download(self, request: pb.DownloadRequest, context: grpc.ServicerContext) -> Iterator[pb.Chunk]:  # noqa: N802
        silo = self.identify(context)
        found = self.hub.model_for(silo, request.model_id)
        if found is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, "no open assignment of this silo uses that model (round over?)")
        job, data = found
        if request.offset > len(data):
            _abort(context, grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} beyond {len(data)} bytes")
        view = memoryview(data)
        with self._transfer_slot(context, silo):
            unwatch = self.hub.watch(job, context.cancel)  # the round giving up on it ends the call
            try:
                for start in range(request.offset, len(data), CHUNK_BYTES):
                    if job.finished:
                        _abort(context, grpc.StatusCode.NOT_FOUND, "the round is over")
                    yield pb.Chunk(data=bytes(view[start : start + CHUNK_BYTES]))
            finally:
                unwatch()

    def Upload(self, request_iterator: Iterator[pb.UploadPart], context: grpc.ServicerContext) -> pb.UploadAck:  # noqa: N802
        silo = self.identify(context)
        with self._transfer_slot(context, silo):
            return self._upload(silo, request_iterator, context)

    def _upload(
        self, silo: str, request_iterator: Iterator[pb.UploadPart], context: grpc.ServicerContext
    ) -> pb.UploadAck:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "an upload starts with its header")
        head = first.header
        job = self._assignment(context, silo, head.assignment_id)
        if job.kind not in ("fit", "secagg"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "only a fit or secagg assignment uploads")
        if head.total_bytes > job.max_upload:  # nothing is allocated: the round gets "rejected" now
            reason = _over_size(job, head.total_bytes)
            self.hub.finish(job, Failure(silo, reason, "rejected"))
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
        up = self.hub.upload_for(job, head.total_bytes, head.sha256)
        if not up.lock.acquire(blocking=False):
            _abort(context, grpc.StatusCode.ABORTED, "another upload of this assignment is in progress")
        unwatch = self.hub.watch(job, context.cancel)  # the round giving up on it ends the call
        try:
            if head.offset != up.received:
                return pb.UploadAck(received=up.received, complete=False)  # resume from what we hold
            max_parts = up.total // 1024 + 64  # no flood of tiny messages
            for parts, part in enumerate(request_iterator):
                if job.finished:
                    _abort(context, grpc.StatusCode.NOT_FOUND, "the round is over")
                n = len(part.data)
                if not part.HasField("data") or parts > max_parts or up.received + n > up.total:
                    _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "upload parts exceed the declared size")
                up.buf[up.received : up.received + n] = part.data
                up.hasher.update(part.data)
                up.received += n
                job.last_progress = time.monotonic()
            if up.received == up.total and not up.complete:
                self.hub.upload_for(job, 0, "")  # throw the corrupt bytes away; the silo sends again
                _abort(context, grpc.StatusCode.DATA_LOSS, "upload checksum mismatch")
            return pb.UploadAck(received=up.received, complete=up.complete)
        finally:
            unwatch()
            up.lock.release()

    def UploadStatus(self, request: pb.AssignmentRef, context: grpc.ServicerContext) -> pb.UploadAck:  # noqa: N802
        job = self._assignment(context, self.identify(context), request.assignment_id)
        up = job.upload
        return pb.UploadAck(received=up.received if up else 0, complete=bool(up and up.complete))

    def Submit(self, request: pb.Result, context: grpc.ServicerContext) -> pb.SubmitAck:  # noqa: N802
        silo = self.identify(context)
        job = self._assignment(context, silo, request.assignment_id)
        if len(request.metrics_json) > MAX_JSON_BYTES or len(request.failure) > MAX_JSON_BYTES:
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "metrics or failure text too large")
        reply: Reply
        if request.failure:
            reply = Failure(silo, " ".join(request.failure.split())[:1000])
        else:
            metrics = _metrics(request.metrics_json)
            if job.kind == "evaluate":
                reply = EvaluateRes(silo, float(request.loss), int(request.num_examples), metrics)
            else:
                up = job.upload
                if up is None or not up.complete:
                    return pb.SubmitAck(accepted=False, reason="upload the parameters first")
                if job.kind == "secagg":  # the protocol's bytes, parsed by the server's driver as untrusted
                    reply = ExchangeRes(silo, job.step, bytes(up.buf))
                else:
                    reply = _fit_result(silo, up.buf, int(request.num_examples), metrics)
        self.hub.finish(job, reply)
        return pb.SubmitAck(accepted=True)

    def Probe(self, request: pb.ProbeRequest, context: grpc.ServicerContext) -> pb.ProbeReply:  # noqa: N802
        return pb.ProbeReply(
            experiment=self.experiment, server_time=time.time(), peer=self.identify(context), protocol=PROTOCOL
        )


def _metrics(text: str) -> dict[str, float]:
    """A result's metrics: a JSON object of numbers (others are dropped); anything else is refused, saying why."""
    why = "not a JSON object"
    try:
        parsed = json.loads(text or "{}")
        if isinstance(parsed, dict):
            return clean_metrics(parsed)
    except RecursionError:
        why = "nested too deeply"
    except OverflowError:
        why = "a number too large for a float"
    except ValueError as exc:  # invalid JSON, or an integer of more digits than Python reads
        why = "not valid JSON" if isinstance(exc, json.JSONDecodeError) else "a number with too many digits"
    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"metrics_json is {why}: send a JSON object of numbers")


def _over_size(job: Assignment, declared: int) -> str:
    """Why an upload is refused, naming both sizes (worded as the other transports word it)."""
    if job.kind == "secagg":
        return f"{job.step} reply of {declared} bytes is over {job.max_upload}"
    return f"update of {declared} bytes is over this round's limit of {job.max_upload} (the model's size + allowance)"


def _fit_result(silo: str, data: bytearray, num_examples: int, metrics: dict[str, float]) -> FitRes | Failure:
    """The update as arrays viewing the received bytes (no copy); they keep the buffer alive."""
    try:
        params = views_of(data)
    except ValueError as exc:  # bytes from another trust domain: anything may be wrong with them
        return Failure(silo, f"update is not valid safetensors: {exc}", "rejected")
    return FitRes(silo, params, num_examples, metrics)
