"""Bad requests get a clear status and message over real gRPC on 127.0.0.1, never the server's exception text.

And the other way round: a silo does not trust the sizes the server announces beyond what its own
model needs.
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from peers import Silo, until

from fedsilo.experiment.provision import load_kit
from fedsilo.runtime.deploy import tls_of
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.silo import SiloRunner, SiloSettings
from fedsilo.wire.arrays import to_bytes
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes

RPCS = ("Session", "Download", "Upload", "UploadStatus", "Submit", "Probe")


def _open_evaluation(server, silo: Silo) -> str:
    assert until(lambda: server.available() == ["a"], 10)
    job = server.hub.assign("a", "evaluate", 1, server.hub.add_model(b"x"), 100, lambda j: pb.Event(ping=pb.Ping()))
    assert job is not None
    return job.id


@pytest.mark.parametrize(
    "metrics",
    ["[" * 20_000 + "]" * 20_000, '{"x": ' + "7" * 5000 + "}", '{"x": 1' + "0" * 400 + "}", "[1, 2]", '{"a": }'],
    ids=["deeply nested", "5000 digits", "too large for a float", "not an object", "not JSON"],
)
def test_bad_metrics_are_refused_with_a_clear_status(kits: Path, server, metrics: str) -> None:
    silo = Silo(kits, "a", server.port)
    job_id = _open_evaluation(server, silo)
    with pytest.raises(grpc.RpcError) as info:
        silo.stub.Submit(pb.Result(assignment_id=job_id, metrics_json=metrics), metadata=silo.md, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "metrics_json" in info.value.details() and "Exception" not in info.value.details()
    silo.close()


@pytest.mark.parametrize("rpc", RPCS)
def test_a_request_that_is_not_a_message_is_refused_with_a_clear_status(kits: Path, server, rpc: str) -> None:
    silo = Silo(kits, "a", server.port)
    method = f"/fedsilo.v1.Orchestrator/{rpc}"
    garbage = b"\xff\xff\xff\xff\x0f"  # a varint that never ends
    with pytest.raises(grpc.RpcError) as info:
        if rpc == "Upload":
            silo.channel.stream_unary(method)(iter([garbage]), metadata=silo.md, timeout=10)
        elif rpc in ("Session", "Download"):
            list(silo.channel.unary_stream(method)(garbage, metadata=silo.md, timeout=10))
        else:
            silo.channel.unary_unary(method)(garbage, metadata=silo.md, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "not a valid" in info.value.details()
    silo.close()


class Recorder:
    def __init__(self) -> None:
        self.calls = 0

    def fit(self, ins: FitIns) -> FitRes:
        self.calls += 1
        return FitRes("a", dict(ins.parameters), 1)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        self.calls += 1
        return EvaluateRes("a", 0.0, 1)

    def exchange(self, step: str, payload: bytes) -> bytes:
        return b""


def test_a_silo_refuses_a_model_larger_than_its_own_before_allocating_it(kits: Path, server) -> None:
    kit = load_kit(kits / "a")
    model = to_bytes({"w": np.zeros(4, np.float32)})
    settings = SiloSettings(f"127.0.0.1:{server.port}", "a", kit.credential, tls_of(kit), max_model_bytes=len(model))
    endpoint = Recorder()
    runner = SiloRunner(endpoint, settings)
    threading.Thread(target=runner.run, daemon=True).start()
    assert until(lambda: server.available() == ["a"], 10)
    model_id = server.hub.add_model(model)
    announced = 64 * 1024**2  # what a rogue server says; the silo's model is under 100 bytes

    def event(job) -> pb.Event:
        return pb.Event(
            assignment=pb.Assignment(
                assignment_id=job.id, kind="evaluate", round=1, config_json="{}", model_id=model_id,
                model_bytes=announced, model_sha256="0" * 64, max_upload_bytes=100,
            )
        )  # fmt: skip

    job = server.hub.assign("a", "evaluate", 1, model_id, 100, event)
    assert job is not None
    while True:
        job_id, reply = server.hub.results.get(timeout=10)
        if job_id == job.id:
            break
    assert isinstance(reply, Failure)
    assert f"{announced} bytes" in reply.reason and "this silo's model" in reply.reason
    assert endpoint.calls == 0
    server.close()
