"""Mutual TLS and identity over real gRPC on 127.0.0.1: who may connect, and who may act for whom."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedsilo.errors import ConnectionFailed
from fedsilo.experiment.config import load_config
from fedsilo.experiment.provision import load_kit, provision
from fedsilo.runtime.deploy import tls_of
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc import fedsilo_pb2_grpc as pb_grpc
from fedsilo.transport.grpc.server import GrpcServerTransport, wait_until
from fedsilo.transport.grpc.silo import SiloRunner, SiloSettings
from fedsilo.transport.grpc.wire import CHANNEL_OPTIONS, CREDENTIAL_KEY, SILO_KEY, Tls, channel_credentials
from fedsilo.transport.timing import ServerLimits
from fedsilo.wire.instructions import FitInstructions, TrainSettings
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, FitIns, FitRes

PARAMS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, dtype=np.float32)}


class AddOne:
    """A silo endpoint that returns the global model + 1, trained on ``n`` examples."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(self.name, {k: v + 1 for k, v in ins.parameters.items()}, self.n, {"seen_round": ins.round})

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return EvaluateRes(self.name, 0.5, self.n, {"accuracy": 0.75})


def settings(kits: Path, name: str, port: int, tls_from: Path | None = None, **kw: object) -> SiloSettings:
    kit = load_kit(kits / name)
    tls = tls_of(load_kit(tls_from)) if tls_from is not None else tls_of(kit)
    return SiloSettings(f"127.0.0.1:{port}", name, kit.credential, tls, connect_timeout_s=2.0, **kw)  # type: ignore[arg-type]


def start_silo(endpoint: object, s: SiloSettings) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(SiloRunner(endpoint, s).run())  # type: ignore[arg-type]
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_silos_with_the_experiments_certificates_train_and_are_weighted(kits: Path, server) -> None:
    threads = [start_silo(AddOne(n, k), settings(kits, n, server.port)) for n, k in (("a", 1), ("b", 3))]
    assert wait_until(lambda: server.available() == ["a", "b"], 10)
    replies = {
        r.silo: r for r in server.fit(["a", "b"], FitIns(1, PARAMS, FitInstructions(TrainSettings(lr=0.1))), timeout=10)
    }
    assert sorted(replies) == ["a", "b"]
    for name, n in (("a", 1), ("b", 3)):
        reply = replies[name]
        assert isinstance(reply, FitRes) and reply.num_examples == n and reply.metrics == {"seen_round": 1.0}
        np.testing.assert_array_equal(reply.parameters["w"], PARAMS["w"] + 1)
        assert list(reply.parameters) == ["w", "b"]  # order kept through safetensors
    evals = list(server.evaluate(["a"], EvaluateIns(1, PARAMS), timeout=10))
    assert isinstance(evals[0], EvaluateRes) and evals[0].metrics == {"accuracy": 0.75}
    server.close()
    for thread, outcome in threads:
        thread.join(10)
        assert isinstance(outcome[0], pb.Done) and outcome[0].reason == "the run is over"


def test_a_silo_certified_by_another_ca_is_refused(kits: Path, server, make_experiment, tmp_path: Path) -> None:
    config, _ = load_config(make_experiment(folder="other"))
    provision(config, tmp_path / "other_kits", "127.0.0.1:1")
    # same silo name, valid credential of this experiment, but a certificate from another CA
    thread, outcome = start_silo(
        AddOne("a", 1), settings(kits, "a", server.port, tls_from=tmp_path / "other_kits" / "a")
    )
    thread.join(15)
    assert isinstance(outcome[0], ConnectionFailed) and "cannot reach the server" in outcome[0].message
    assert server.available() == [] and not server.hub.has_seen("a")


def test_a_plain_text_client_cannot_connect_to_a_tls_server(kits: Path, server) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=CHANNEL_OPTIONS)
    kit = load_kit(kits / "a")
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.OrchestratorStub(channel).Probe(
            pb.ProbeRequest(), metadata=[(CREDENTIAL_KEY, kit.credential), (SILO_KEY, "a")], timeout=3
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()
    thread, outcome = start_silo(
        AddOne("a", 1), SiloSettings(f"127.0.0.1:{server.port}", "a", kit.credential, None, connect_timeout_s=2.0)
    )
    thread.join(15)
    assert isinstance(outcome[0], ConnectionFailed)
    assert not server.hub.has_seen("a")


def _stub(kits: Path, name: str, port: int) -> tuple[grpc.Channel, pb_grpc.OrchestratorStub]:
    kit = load_kit(kits / name)
    channel = grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(tls_of(kit)), options=CHANNEL_OPTIONS)
    return channel, pb_grpc.OrchestratorStub(channel)


def test_a_valid_silo_cannot_act_for_another(kits: Path, server) -> None:
    b_thread = start_silo(AddOne("b", 3), settings(kits, "b", server.port))
    a_kit = load_kit(kits / "a")
    channel, stub = _stub(kits, "a", server.port)
    # a's certificate with a's credential while claiming to be b: the certificate decides who it is
    as_b = [(CREDENTIAL_KEY, a_kit.credential), (SILO_KEY, "b")]
    assert stub.Probe(pb.ProbeRequest(), metadata=as_b, timeout=5).peer == "a"
    # a's certificate with b's name is not b: b's credential is unknown to a, and a's does not work for b
    b_cred = [(CREDENTIAL_KEY, "guessed"), (SILO_KEY, "b")]
    with pytest.raises(grpc.RpcError) as info:
        stub.Probe(pb.ProbeRequest(), metadata=b_cred, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # b gets a task; a learns its id (say, by eavesdropping) and tries to upload and submit for it
    assert wait_until(lambda: server.available() == ["b"], 10)
    hub = server.hub
    model_id = hub.add_model(b"x" * 10)
    task = hub.assign("b", "fit", 1, model_id, 100, lambda t: pb.Event(ping=pb.Ping()))
    assert task is not None
    for call in (
        lambda: stub.Submit(pb.Result(assignment_id=task.id, num_examples=10**6), metadata=as_b, timeout=5),
        lambda: stub.UploadStatus(pb.AssignmentRef(assignment_id=task.id), metadata=as_b, timeout=5),
        lambda: list(stub.Download(pb.DownloadRequest(model_id=model_id), metadata=as_b, timeout=5)),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
    assert hub.results.empty()  # nothing was accepted for b
    channel.close()
    server.close()
    b_thread[0].join(10)


def test_a_silo_refuses_a_server_whose_certificate_another_ca_signed(
    kits: Path, make_experiment, tmp_path: Path
) -> None:
    config, _ = load_config(make_experiment(folder="rogue"))
    provision(config, tmp_path / "rogue_kits", "127.0.0.1:1")
    rogue = load_kit(tmp_path / "rogue_kits" / "server")
    real_ca = load_kit(kits / "a").ca_pem
    # the impostor trusts the real CA (it accepts the silo) and would accept any credential; its own
    # certificate comes from another CA, so only the silo's check of the server's certificate stops it
    impostor = GrpcServerTransport(
        "127.0.0.1:0",
        "exp",
        lambda silo, credential: True,
        Tls(real_ca, rogue.cert_pem, rogue.key_pem),
        limits=ServerLimits(heartbeat_s=0.5),
    )
    try:
        thread, outcome = start_silo(AddOne("a", 1), settings(kits, "a", impostor.port))
        thread.join(15)
        assert isinstance(outcome[0], ConnectionFailed)
        assert not impostor.hub.has_seen("a")
    finally:
        impostor.close()
