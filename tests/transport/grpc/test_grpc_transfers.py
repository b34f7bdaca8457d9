"""Transfers over real gRPC on 127.0.0.1: limits on what a silo may send, resuming broken uploads, deadlines.

Whether an upload is too large is the server's decision: a header declaring more than the
assignment allows ends it at once as ``rejected`` (not at the round's deadline), and the silo
moves on to its next assignment.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedsilo.experiment.provision import load_kit
from fedsilo.runtime.deploy import tls_of
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc import fedsilo_pb2_grpc as pb_grpc
from fedsilo.transport.grpc.server import UPLOAD_ALLOWANCE, GrpcServerTransport, wait_until
from fedsilo.transport.grpc.silo import SiloRunner, SiloSettings
from fedsilo.transport.grpc.wire import (
    CHANNEL_OPTIONS,
    CHUNK_BYTES,
    CREDENTIAL_KEY,
    PROTOCOL,
    SILO_KEY,
    channel_credentials,
)
from fedsilo.wire.arrays import from_bytes, to_bytes
from fedsilo.wire.instructions import FitInstructions, TrainSettings
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes


class Silo:
    """A hand-driven silo: opens a session and reads its events, so a test can misbehave on purpose."""

    def __init__(self, kits: Path, name: str, port: int) -> None:
        kit = load_kit(kits / name)
        self.channel = grpc.secure_channel(
            f"127.0.0.1:{port}", channel_credentials(tls_of(kit)), options=CHANNEL_OPTIONS
        )
        self.stub = pb_grpc.OrchestratorStub(self.channel)
        self.md = [(CREDENTIAL_KEY, kit.credential), (SILO_KEY, name)]
        self.tasks: list[pb.Assignment] = []
        self.session = self.stub.Session(pb.Hello(protocol=PROTOCOL), metadata=self.md)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.session:
                if event.HasField("assignment"):
                    self.tasks.append(event.assignment)
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self.session.cancel()
        self.channel.close()


def _big_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"w": rng.normal(size=(3 * CHUNK_BYTES // 4 + 17,)).astype(np.float32)}  # ~3 chunks


def _fit_in_background(server: GrpcServerTransport, silos: list[str], params, timeout: float) -> list:
    replies: list = []
    thread = threading.Thread(
        target=lambda: replies.extend(
            server.fit(silos, FitIns(1, params, FitInstructions(TrainSettings())), timeout=timeout)
        ),
        daemon=True,
    )
    thread.start()
    replies.append(thread)
    return replies


def test_an_interrupted_upload_resumes_from_the_last_byte_received(kits: Path, server) -> None:
    silo = Silo(kits, "a", server.port)
    assert wait_until(lambda: server.available() == ["a"], 10)
    params = _big_params()
    replies = _fit_in_background(server, ["a"], params, timeout=30)
    assert wait_until(lambda: silo.tasks, 10)
    task = silo.tasks[0]
    model = b"".join(c.data for c in silo.stub.Download(pb.DownloadRequest(model_id=task.model_id), metadata=silo.md))
    assert hashlib.sha256(model).hexdigest() == task.model_sha256
    update = to_bytes({"w": from_bytes(model)["w"] * 2})
    digest = hashlib.sha256(update).hexdigest()
    header = pb.UploadHeader(assignment_id=task.assignment_id, total_bytes=len(update), sha256=digest, offset=0)

    sent, hold = threading.Event(), threading.Event()

    def broken() -> Iterator[pb.UploadPart]:
        yield pb.UploadPart(header=header)
        yield pb.UploadPart(data=update[:CHUNK_BYTES])
        sent.set()
        hold.wait(10)  # the link goes quiet here and the call is cut

    future = silo.stub.Upload.future(broken(), metadata=silo.md)
    assert sent.wait(10)
    assert wait_until(
        lambda: (
            silo.stub.UploadStatus(pb.AssignmentRef(assignment_id=task.assignment_id), metadata=silo.md).received
            == CHUNK_BYTES
        ),
        10,
    )
    future.cancel()
    hold.set()
    held = silo.stub.UploadStatus(pb.AssignmentRef(assignment_id=task.assignment_id), metadata=silo.md).received
    assert held == CHUNK_BYTES
    # a restart from 0 is told where to resume, without the server taking the bytes again
    ack = silo.stub.Upload(iter([pb.UploadPart(header=header)]), metadata=silo.md)
    assert (ack.received, ack.complete) == (CHUNK_BYTES, False)
    resumed = pb.UploadHeader(assignment_id=task.assignment_id, total_bytes=len(update), sha256=digest, offset=held)
    parts = [pb.UploadPart(header=resumed)] + [
        pb.UploadPart(data=update[i : i + CHUNK_BYTES]) for i in range(held, len(update), CHUNK_BYTES)
    ]
    ack = silo.stub.Upload(iter(parts), metadata=silo.md)
    assert ack.complete and ack.received == len(update)
    assert silo.stub.Submit(pb.Result(assignment_id=task.assignment_id, num_examples=5), metadata=silo.md).accepted
    replies[0].join(10)
    reply = replies[1]
    assert isinstance(reply, FitRes) and reply.num_examples == 5
    np.testing.assert_array_equal(reply.parameters["w"], params["w"] * 2)
    silo.close()


def test_a_silo_cannot_send_more_than_it_declared_or_a_corrupt_upload(kits: Path, server) -> None:
    silo = Silo(kits, "a", server.port)
    assert wait_until(lambda: server.available() == ["a"], 10)
    replies = _fit_in_background(server, ["a"], {"w": np.zeros(1000, np.float32)}, timeout=30)
    assert wait_until(lambda: silo.tasks, 10)
    task = silo.tasks[0]
    data = to_bytes({"w": np.ones(1000, np.float32)})
    liar = pb.UploadHeader(assignment_id=task.assignment_id, total_bytes=10, sha256="0" * 64)
    with pytest.raises(grpc.RpcError) as info:  # more bytes than declared
        silo.stub.Upload(iter([pb.UploadPart(header=liar), pb.UploadPart(data=data)]), metadata=silo.md)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    wrong = pb.UploadHeader(assignment_id=task.assignment_id, total_bytes=len(data), sha256="0" * 64)
    with pytest.raises(grpc.RpcError) as info:  # bytes that do not match their checksum
        silo.stub.Upload(iter([pb.UploadPart(header=wrong), pb.UploadPart(data=data)]), metadata=silo.md)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    ack = silo.stub.Submit(pb.Result(assignment_id=task.assignment_id, num_examples=5), metadata=silo.md)
    assert not ack.accepted and "upload" in ack.reason
    too_big_json = pb.Result(assignment_id=task.assignment_id, metrics_json="{" + " " * 70_000 + "}")
    with pytest.raises(grpc.RpcError) as info:
        silo.stub.Submit(too_big_json, metadata=silo.md)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:  # a single message over gRPC's limit never reaches the handler
        silo.stub.Submit(pb.Result(assignment_id="x" * (2 * CHUNK_BYTES)), metadata=silo.md)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    silo.close()
    replies[0].join(15)
    assert replies[1].kind == "disconnected"


def test_a_silent_silo_times_out_but_a_slow_transfer_in_progress_does_not(kits: Path, server) -> None:
    silent, slow = Silo(kits, "a", server.port), Silo(kits, "b", server.port)
    assert wait_until(lambda: server.available() == ["a", "b"], 10)
    params = _big_params()
    started = time.monotonic()
    replies = _fit_in_background(server, ["a", "b"], params, timeout=1.0)
    assert wait_until(lambda: slow.tasks, 10)
    task = slow.tasks[0]
    update = to_bytes(params)
    header = pb.UploadHeader(
        assignment_id=task.assignment_id, total_bytes=len(update), sha256=hashlib.sha256(update).hexdigest(), offset=0
    )

    def trickle() -> Iterator[pb.UploadPart]:  # keeps moving, but finishes well after the 1 s deadline
        yield pb.UploadPart(header=header)
        step = CHUNK_BYTES // 4
        for i in range(0, len(update), step):
            time.sleep(0.25)
            yield pb.UploadPart(data=update[i : i + step])

    assert slow.stub.Upload(trickle(), metadata=slow.md).complete
    assert slow.stub.Submit(pb.Result(assignment_id=task.assignment_id, num_examples=3), metadata=slow.md).accepted
    replies[0].join(10)
    by_silo = {r.silo: r for r in replies[1:]}
    assert by_silo["a"].kind == "timeout"
    assert isinstance(by_silo["b"], FitRes)
    assert time.monotonic() - started > 2.0  # b's upload ran past the deadline and was still taken
    silent.close()
    slow.close()


def test_an_upload_declared_over_the_limit_is_rejected_at_once(kits: Path, server) -> None:
    silo = Silo(kits, "a", server.port)
    assert wait_until(lambda: server.available() == ["a"], 10)
    started = time.monotonic()
    replies = _fit_in_background(server, ["a"], {"w": np.zeros(1000, np.float32)}, timeout=30)
    assert wait_until(lambda: silo.tasks, 10)
    task = silo.tasks[0]
    huge = pb.UploadHeader(assignment_id=task.assignment_id, total_bytes=10 * 1024**3, sha256="0" * 64)
    with pytest.raises(grpc.RpcError) as info:
        silo.stub.Upload(iter([pb.UploadPart(header=huge)]), metadata=silo.md)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # nothing was allocated for it
    replies[0].join(5)
    reply = replies[1]
    assert isinstance(reply, Failure) and reply.kind == "rejected"
    assert f"{10 * 1024**3} bytes" in reply.reason and str(task.max_upload_bytes) in reply.reason
    assert time.monotonic() - started < 10  # decided on the header, not at the 30 s deadline
    with pytest.raises(grpc.RpcError) as info:  # the assignment is over: nothing more is taken for it
        silo.stub.UploadStatus(pb.AssignmentRef(assignment_id=task.assignment_id), metadata=silo.md)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    silo.close()


class Oversized:
    """A silo endpoint whose first update, and every protocol reply, is larger than the server allows."""

    def __init__(self) -> None:
        self.fits = 0

    def fit(self, ins: FitIns) -> FitRes:
        self.fits += 1
        params = dict(ins.parameters)
        if self.fits == 1:  # more than the allowance over the model's size
            params["padding"] = np.zeros(UPLOAD_ALLOWANCE // 4 + 1024, np.float32)
        return FitRes("a", params, 3)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return EvaluateRes("a", 0.0, 1)

    def exchange(self, step: str, payload: bytes) -> bytes:
        return b"x" * 100


def test_a_real_silo_with_an_oversize_reply_is_rejected_at_once_and_serves_the_next_round(kits: Path, server) -> None:
    kit = load_kit(kits / "a")
    runner = SiloRunner(Oversized(), SiloSettings(f"127.0.0.1:{server.port}", "a", kit.credential, tls_of(kit)))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.available() == ["a"], 10)
    params = {"w": np.ones(10, np.float32)}
    started = time.monotonic()
    [fit] = server.fit(["a"], FitIns(1, params, FitInstructions(TrainSettings())), timeout=30)
    [step] = server.exchange("advertise", {"a": b"hello"}, timeout=30, max_reply_bytes=10)
    assert isinstance(fit, Failure) and fit.kind == "rejected" and "over this round's limit" in fit.reason
    assert isinstance(step, Failure) and step.kind == "rejected"
    assert step.reason == "advertise reply of 100 bytes is over 10"  # worded as the other transports word it
    assert time.monotonic() - started < 10  # the server decided: neither waited for its 30 s deadline
    [again] = server.fit(["a"], FitIns(2, params, FitInstructions(TrainSettings())), timeout=30)
    assert isinstance(again, FitRes) and list(again.parameters) == ["w"]  # the silo stayed up
    [ok] = server.exchange("advertise", {"a": b"hello"}, timeout=30, max_reply_bytes=100)
    assert isinstance(ok, ExchangeRes) and ok.payload == b"x" * 100
    server.close()
    thread.join(10)
    assert not thread.is_alive()
