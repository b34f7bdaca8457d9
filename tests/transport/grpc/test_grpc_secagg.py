"""Secure aggregation over real gRPC + mutual TLS on 127.0.0.1: three silo runners, the server loop, one round.

The silos' models are fixed, so the FedAvg mean is known by hand. A recording wrapper around the
server's transport keeps what the server actually received: fit replies without parameters, and
masked vectors that are not the silos' encoded updates.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedsilo.client.numpy import NumpyClient
from fedsilo.experiment.provision import load_kit
from fedsilo.privacy.secagg import FixedPoint, encode, layout_of
from fedsilo.privacy.secagg.messages import MaskedInput
from fedsilo.privacy.secagg.wire import from_bytes
from fedsilo.runtime.deploy import tls_of
from fedsilo.server.loop import ServerLoop
from fedsilo.server.secure_aggregation import SecAggSettings
from fedsilo.server.settings import LoopSettings
from fedsilo.silo.agent import SiloAgent
from fedsilo.strategy.base import Sampling
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc import fedsilo_pb2_grpc as pb_grpc
from fedsilo.transport.grpc.server import GrpcServerTransport, wait_until
from fedsilo.transport.grpc.silo import SiloRunner, SiloSettings
from fedsilo.transport.grpc.wire import CHANNEL_OPTIONS, CREDENTIAL_KEY, PROTOCOL, SILO_KEY, channel_credentials
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.messages import ExchangeRes, Failure, FitIns, FitRes

MODELS = {"a": (12, [1.0, -2.0]), "b": (24, [0.5, 4.0]), "c": (36, [-3.0, 1.5])}  # examples, trained model


def initial() -> ArrayDict:
    return {"w": np.array([0.25, 0.5], np.float32)}


def agent(name: str) -> SiloAgent:
    n, trained = MODELS[name]
    data = (np.zeros((n, 1)), np.zeros(n))
    client = NumpyClient(
        initial(),
        lambda p, d, s, r: ({"w": np.array(trained, np.float32)}, {}),
        lambda p, d: (1.0, {}),
        lambda: data,
        lambda: data,
    )
    return SiloAgent(name, lambda: client)


class Recording:
    """The server's transport, keeping a copy of every fit reply and protocol reply it received."""

    def __init__(self, inner: GrpcServerTransport) -> None:
        self.inner = inner
        self.fits: list[FitRes | Failure] = []
        self.steps: list[ExchangeRes | Failure] = []

    def available(self) -> list[str]:
        return self.inner.available()

    def fit(self, silos: Any, ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        for reply in self.inner.fit(silos, ins, timeout):
            self.fits.append(reply)
            yield reply

    def evaluate(self, *args: Any) -> Iterator[Any]:
        yield from self.inner.evaluate(*args)

    def exchange(self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply: int) -> Iterator[Any]:
        for reply in self.inner.exchange(step, messages, timeout, max_reply):
            self.steps.append(reply)
            yield reply

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def silos(kits: Path, server: GrpcServerTransport) -> Iterator[None]:
    threads = []
    for name in MODELS:
        kit = load_kit(kits / name)
        settings = SiloSettings(f"127.0.0.1:{server.port}", name, kit.credential, tls_of(kit), stall_timeout_s=5)
        runner = SiloRunner(agent(name), settings)
        threads.append(threading.Thread(target=runner.run, daemon=True))
        threads[-1].start()
    assert wait_until(lambda: server.available() == sorted(MODELS), 20)
    yield
    server.close()
    for t in threads:
        t.join(10)


def test_a_secure_round_over_grpc_gives_fedavg_and_the_server_never_sees_an_update(server, silos) -> None:
    transport = Recording(server)
    strategy = FedAvg(Sampling(min_fit_clients=3, min_available_clients=3, fraction_evaluate=0.0))
    settings = LoopSettings(1, round_timeout=30, secure_aggregation=SecAggSettings(step_timeout_s=20))
    params = ServerLoop(transport, strategy, settings).run(initial(), strategy.initial_state(initial())).parameters

    total = sum(n for n, _ in MODELS.values())
    expected = sum(n * np.array(m) for n, m in MODELS.values()) / total
    np.testing.assert_allclose(params["w"], expected, atol=1e-6)

    assert sorted(r.silo for r in transport.fits) == sorted(MODELS)
    assert all(isinstance(r, FitRes) and r.parameters == {} for r in transport.fits)
    assert sorted({r.step for r in transport.steps if isinstance(r, ExchangeRes)}) == sorted(
        ["advertise", "share_keys", "masked_input", "unmask"]
    )
    masked = {r.silo: from_bytes(r.payload, MaskedInput) for r in transport.steps if r.step == "masked_input"}
    assert sorted(masked) == sorted(MODELS)
    layout, fp = layout_of(initial()), FixedPoint()
    for name, (n, trained) in MODELS.items():
        delta = {"w": (np.array(trained, np.float64) - initial()["w"]) * n / total}
        plain, _ = encode(delta, layout, fp)
        assert masked[name].vector.shape == plain.shape
        assert not np.any(masked[name].vector == plain)  # every value is masked


class HandSilo:
    """A silo driven by hand over its own certificate: a session that collects the tasks pushed to it."""

    def __init__(self, kits: Path, name: str, port: int) -> None:
        kit = load_kit(kits / name)
        creds = channel_credentials(tls_of(kit))
        self.channel = grpc.secure_channel(f"127.0.0.1:{port}", creds, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.OrchestratorStub(self.channel)
        self.md = [(CREDENTIAL_KEY, kit.credential), (SILO_KEY, name)]
        self.tasks: list[pb.Assignment] = []
        self.session = self.stub.Session(pb.Hello(protocol=PROTOCOL), metadata=self.md)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for event in self.session:
                if event.HasField("assignment"):
                    self.tasks.append(event.assignment)

    def upload(self, task: pb.Assignment, data: bytes) -> pb.UploadAck:
        head = pb.UploadHeader(
            assignment_id=task.assignment_id, total_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
        return self.stub.Upload(iter([pb.UploadPart(header=head), pb.UploadPart(data=data)]), metadata=self.md)

    def close(self) -> None:
        self.session.cancel()
        self.channel.close()


def test_a_step_message_reaches_only_its_silo_and_replies_are_bounded(kits: Path, server) -> None:
    a, b = HandSilo(kits, "a", server.port), HandSilo(kits, "b", server.port)
    assert wait_until(lambda: server.available() == ["a", "b"], 10)
    replies: list[Any] = []
    messages = {"a": b"for a only", "b": b"for b only"}
    worker = threading.Thread(target=lambda: replies.extend(server.exchange("share_keys", messages, 10, 64)))
    worker.start()
    assert wait_until(lambda: a.tasks and b.tasks, 10)
    task_a, task_b = a.tasks[0], b.tasks[0]
    assert (task_a.kind, task_a.step) == ("secagg", "share_keys")
    got = b"".join(c.data for c in a.stub.Download(pb.DownloadRequest(model_id=task_a.model_id), metadata=a.md))
    assert got == b"for a only"
    for call in (  # a, with its own certificate, reaching for b's message and b's task
        lambda: list(a.stub.Download(pb.DownloadRequest(model_id=task_b.model_id), metadata=a.md)),
        lambda: a.upload(task_b, b"forged"),
        lambda: a.stub.Submit(pb.Result(assignment_id=task_b.assignment_id), metadata=a.md),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
    with pytest.raises(grpc.RpcError) as info:  # over the step's reply bound of 64 bytes: b is out of this step
        b.upload(task_b, b"x" * 65)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        b.stub.Submit(pb.Result(assignment_id=task_b.assignment_id, failure="cannot answer"), metadata=b.md)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert a.upload(task_a, b"a's answer").complete
    assert a.stub.Submit(pb.Result(assignment_id=task_a.assignment_id), metadata=a.md).accepted
    worker.join(20)
    by_silo = {r.silo: r for r in replies}
    assert by_silo["a"] == ExchangeRes("a", "share_keys", b"a's answer")
    assert by_silo["b"] == Failure("b", "share_keys reply of 65 bytes is over 64", "rejected")
    a.close()
    b.close()
