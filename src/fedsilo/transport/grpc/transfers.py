"""A silo's transfers with the server: downloads, uploads and submissions that resume and never hang.

Each transfer is retried after a broken call and resumes from the last byte the other side holds;
it is abandoned only when it makes no progress for ``stall_timeout_s`` (a watchdog cancels a call
that stalls), never for being slow. An answer meaning "the server no longer wants this" (the round
ended without it, it refused the upload, it cancelled the assignment) ends the assignment:
:class:`AssignmentGone`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.wire import chunks

GONE = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
Log = Callable[[str], None]


class AssignmentGone(Exception):
    """The server no longer wants this assignment (the round ended without it, or it refused the upload)."""


def describe_rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'error'}: {' '.join(str(details).split())}"


class Watchdog:
    """Cancels a call that has made no progress for ``timeout`` seconds (a slow call is fine)."""

    def __init__(self, cancel: Callable[[], Any], timeout: float) -> None:
        self._cancel = cancel
        self._timeout = timeout
        self._last = time.monotonic()
        self._done = threading.Event()
        self.fired = False
        threading.Thread(target=self._watch, daemon=True, name="fedsilo-watchdog").start()

    def touch(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, self._timeout / 4)):
            if time.monotonic() - self._last > self._timeout:
                self.fired = True
                self._cancel()
                return

    def stop(self) -> None:
        self._done.set()


class SiloTransfers:
    """The transfers of one silo's assignments over ``stub``, with the silo's credentials in ``metadata``."""

    def __init__(
        self,
        stub: Any,
        metadata: Sequence[tuple[str, str]],
        stall_timeout_s: float,
        over: threading.Event,
        log: Log,
        cancelled: Callable[[str], bool] = lambda _id: False,
    ) -> None:
        self.stub, self.metadata, self.stall_timeout_s = stub, list(metadata), stall_timeout_s
        self.over, self.log = over, log  # ``over``: the server ended the run, abandon what is in flight
        self.cancelled = cancelled  # whether the server cancelled an assignment (by id)

    def retry(self, what: str, job_id: str, step: Callable[[], bool], progress: Callable[[], int]) -> None:
        """Run ``step`` until it returns True; give up only after ``stall_timeout_s`` without progress."""
        last, last_progress = progress(), time.monotonic()
        while True:
            if self.over.is_set():
                raise AssignmentGone("the server ended the run")
            if self.cancelled(job_id):
                raise AssignmentGone("the server cancelled it")
            try:
                if step():
                    return
            except grpc.RpcError as exc:
                if exc.code() in GONE:
                    raise AssignmentGone(describe_rpc_error(exc)) from None
                self.log(f"{what} interrupted ({describe_rpc_error(exc)}); resuming")
            now = progress()
            if now != last:
                last, last_progress = now, time.monotonic()
            elif time.monotonic() - last_progress > self.stall_timeout_s:
                raise AssignmentGone(f"{what} made no progress for {self.stall_timeout_s:.0f}s")
            time.sleep(0.5)

    def download(self, job: pb.Assignment) -> bytearray:
        """The assignment's model bytes, hashed as they arrive (resumed downloads continue the same hash)."""
        buf = bytearray(job.model_bytes)
        got = [0]
        hasher = hashlib.sha256()

        def step() -> bool:
            call = self.stub.Download(pb.DownloadRequest(model_id=job.model_id, offset=got[0]), metadata=self.metadata)
            dog = Watchdog(call.cancel, self.stall_timeout_s)
            try:
                for chunk in call:
                    n = len(chunk.data)
                    if got[0] + n > len(buf):
                        raise AssignmentGone("the server sent more model bytes than announced")
                    buf[got[0] : got[0] + n] = chunk.data
                    hasher.update(chunk.data)
                    got[0] += n
                    dog.touch()
            finally:
                dog.stop()
            return got[0] == len(buf)

        self.retry("download", job.assignment_id, step, lambda: got[0])
        if hasher.hexdigest() != job.model_sha256:
            raise AssignmentGone("the downloaded model's checksum does not match")
        return buf

    def upload(self, job: pb.Assignment, data: bytes) -> None:
        """Send ``data`` in chunks, resuming where the server's copy ends.

        The header declares the size whatever it is: the server decides whether it is too large.
        If it is over the assignment's ``max_upload_bytes`` the server ends the assignment as
        rejected and answers RESOURCE_EXHAUSTED, and the silo drops it at once (no retries).
        """
        over = len(data) > job.max_upload_bytes
        digest = hashlib.sha256(data).hexdigest()
        view = memoryview(data)
        held = [0]
        ref = pb.AssignmentRef(assignment_id=job.assignment_id)

        def step() -> bool:
            status = self.stub.UploadStatus(ref, metadata=self.metadata, timeout=30)
            if status.complete:
                return True
            held[0] = status.received
            dog: list[Watchdog] = []

            def parts() -> Iterator[pb.UploadPart]:
                header = pb.UploadHeader(
                    assignment_id=job.assignment_id, total_bytes=len(data), sha256=digest, offset=held[0]
                )
                yield pb.UploadPart(header=header)
                for piece in chunks(view, held[0]):
                    yield pb.UploadPart(data=bytes(piece))
                    if dog:
                        dog[0].touch()

            future = self.stub.Upload.future(parts(), metadata=self.metadata)
            dog.append(Watchdog(future.cancel, self.stall_timeout_s))
            try:
                ack = future.result()
            except grpc.RpcError as exc:
                if over and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # not a busy server: a refusal
                    raise AssignmentGone(f"the server refused the upload: {describe_rpc_error(exc)}") from None
                raise
            finally:
                dog[0].stop()
            held[0] = ack.received
            return bool(ack.complete)

        self.retry("upload", job.assignment_id, step, lambda: held[0])

    def submit(self, result: pb.Result) -> None:
        def step() -> bool:
            ack = self.stub.Submit(result, metadata=self.metadata, timeout=60)
            if not ack.accepted:
                raise AssignmentGone(ack.reason)
            return True

        self.retry("submit", result.assignment_id, step, lambda: 0)
