"""Fuzzing a running deployment over real gRPC + mutual TLS on 127.0.0.1, with a seeded generator.

While a real run trains (three silos, the NumPy task), a fourth valid silo kit ("mallory",
added to the federation but not sampled in these rounds) sends random and mutated messages of
every RPC at the start of each round, and other connections send random bytes before TLS. The
server never crashes, every bad request gets a clear status (never UNKNOWN or INTERNAL, never the
server's exception text), it still serves its honest silos, and the run's final model is the one
a clean simulation of the same experiment gives. Bounded: a fixed count of messages per round.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from peers import until

from fedsilo.experiment.config import load_config
from fedsilo.experiment.plan import build_plan
from fedsilo.experiment.provision import add_silo, file_sha256, load_kit, provision
from fedsilo.runtime.deploy import DeploymentRuntime, SiloOptions, run_silo, tls_of
from fedsilo.runtime.launch import run_experiment
from fedsilo.runtime.run import run
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.wire import CHANNEL_OPTIONS, CREDENTIAL_KEY, PROTOCOL, SILO_KEY, channel_credentials

MESSAGES_PER_ROUND = 60
RAW_CONNECTIONS_PER_ROUND = 8
CLEAR = {
    grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ABORTED, grpc.StatusCode.DATA_LOSS,
}  # fmt: skip
NASTY_JSON = ["[" * 5000 + "]" * 5000, '{"x": ' + "9" * 5000 + "}", '{"x": 1' + "0" * 400 + "}", "{", "[]", "null"]


class Fuzzer:
    """An observer that, at each round's start, sends mallory's random and mutated requests."""

    def __init__(self, kits: Path, task_sha256: str) -> None:
        self.kits, self.task_sha256 = kits, task_sha256
        self.transport: Any = None
        self.codes: Counter[str] = Counter()
        self.unclear: list[str] = []

    def on_round_start(self, rnd: int, silos: Any) -> None:
        assert "mallory" not in silos
        rng = np.random.default_rng(rnd)
        kit = load_kit(self.kits / "mallory")
        address = f"127.0.0.1:{self.transport.port}"
        with grpc.secure_channel(address, channel_credentials(tls_of(kit)), options=CHANNEL_OPTIONS) as channel:
            md = [(CREDENTIAL_KEY, kit.credential), (SILO_KEY, "mallory")]
            for _ in range(MESSAGES_PER_ROUND):
                self._send(channel, md, rng)
            assert channel.unary_unary("/fedsilo.v1.Orchestrator/Probe")(b"", metadata=md, timeout=5)  # still up
        for _ in range(RAW_CONNECTIONS_PER_ROUND):
            _raw_bytes(self.transport.port, rng)
        assert until(lambda: "mallory" not in self.transport.available(), 5)  # never sampled

    def _send(self, channel: grpc.Channel, md: list[tuple[str, str]], rng: np.random.Generator) -> None:
        rpc = str(rng.choice(["Session", "Download", "Upload", "UploadStatus", "Submit", "Probe"]))
        method = f"/fedsilo.v1.Orchestrator/{rpc}"
        try:
            if rpc == "Upload":
                parts = [_mutated(_valid("UploadPart", rng, self.task_sha256), rng) for _ in range(rng.integers(0, 4))]
                channel.stream_unary(method)(iter(parts), metadata=md, timeout=5)
            elif rpc in ("Session", "Download"):
                call = channel.unary_stream(method)(
                    _mutated(_valid(rpc, rng, self.task_sha256), rng), metadata=md, timeout=5
                )
                next(call, None)  # a session that opens: its Welcome, then we leave
                call.cancel()
            else:
                channel.unary_unary(method)(_mutated(_valid(rpc, rng, self.task_sha256), rng), metadata=md, timeout=5)
            self.codes["OK"] += 1
        except grpc.RpcError as exc:
            self.codes[exc.code().name] += 1
            details = exc.details() or ""
            if exc.code() not in CLEAR or "Exception" in details or "Traceback" in details:
                self.unclear.append(f"{rpc}: {exc.code().name}: {details}")

    def on_reply(self, *a: Any) -> None: ...
    def on_metrics(self, row: Any) -> None: ...
    def on_round_end(self, *a: Any) -> None: ...


def _valid(rpc: str, rng: np.random.Generator, task_sha256: str) -> bytes:
    """A well-formed request of ``rpc`` (random fields), serialized."""
    big = [0, 1, 2**20, 2**63, 2**64 - 1][int(rng.integers(0, 5))]  # (rng.choice would make them floats)
    ident = rng.bytes(16).hex()
    if rpc == "Session":
        return pb.Hello(
            protocol=int(rng.choice([PROTOCOL, 0, 99])), task_sha256=str(rng.choice([task_sha256, ident]))
        ).SerializeToString()
    if rpc == "Download":
        return pb.DownloadRequest(model_id=ident, offset=big).SerializeToString()
    if rpc == "UploadPart":
        if rng.random() < 0.5:
            head = pb.UploadHeader(assignment_id=ident, total_bytes=big, sha256=ident, offset=big)
            return pb.UploadPart(header=head).SerializeToString()
        return pb.UploadPart(data=rng.bytes(int(rng.integers(0, 64)))).SerializeToString()
    if rpc == "UploadStatus":
        return pb.AssignmentRef(assignment_id=ident).SerializeToString()
    if rpc == "Submit":
        result = pb.Result(
            assignment_id=ident, num_examples=big, loss=float(rng.choice([0.5, np.nan, np.inf])),
            metrics_json=str(rng.choice(NASTY_JSON)), failure=str(rng.choice(["", "x" * 100])),
        )  # fmt: skip
        return result.SerializeToString()
    return b""  # ProbeRequest


def _mutated(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` as it is, with bytes flipped, truncated, or replaced by random bytes."""
    how = rng.integers(0, 4)
    if how == 1 and data:
        out = bytearray(data)
        for i in rng.integers(0, len(out), size=int(rng.integers(1, 4))):
            out[int(i)] ^= int(rng.integers(1, 256))
        return bytes(out)
    if how == 2 and data:
        return data[: int(rng.integers(0, len(data)))]
    if how == 3:
        return rng.bytes(int(rng.integers(0, 200)))
    return data


def _raw_bytes(port: int, rng: np.random.Generator) -> None:
    """A connection that sends random bytes (some begin like a TLS record) instead of a handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        prefix = b"\x16\x03\x01" if rng.random() < 0.5 else b""
        with contextlib.suppress(OSError):
            s.sendall(prefix + rng.bytes(int(rng.integers(1, 2000))))
            s.settimeout(2)
            while s.recv(4096):  # the server answers with an alert or closes
                pass


def test_fuzzed_requests_get_clear_statuses_and_the_run_gives_a_clean_runs_model(
    make_experiment, tmp_path: Path
) -> None:
    exp = make_experiment(
        rounds=3,
        extra={"server": {"heartbeat_s": 0.5, "wait_timeout_s": 30}, "strategy": {"min_available_clients": 3}},
    )
    config, text = load_config(exp)
    kits = tmp_path / "kits"
    provision(config, kits, "127.0.0.1:1")
    add_silo(config, kits, "mallory")  # a valid kit of the federation, not among the YAML's silos
    fuzzer = Fuzzer(kits, file_sha256(config.task))
    notes: list[str] = []
    silos: list[threading.Thread] = []

    def start_silos(transport: Any) -> None:
        fuzzer.transport = transport
        for name in "abc":
            options = SiloOptions(kits / name, exp.parent / "data" / name, server=f"127.0.0.1:{transport.port}")
            silos.append(threading.Thread(target=run_silo, args=(options,), daemon=True))
            silos[-1].start()

    runtime = DeploymentRuntime(
        config, kits / "server", listen="127.0.0.1:0", notify=notes.append, on_listen=start_silos
    )
    fuzzed = run(build_plan(config, silo_data=False), runtime, [fuzzer], text)
    for thread in silos:
        thread.join(10)
    assert fuzzer.unclear == [], fuzzer.unclear
    assert sum(fuzzer.codes.values()) == 3 * MESSAGES_PER_ROUND and fuzzer.codes["INVALID_ARGUMENT"] > 0
    assert not any("internal error" in note for note in notes), notes
    assert fuzzed.summary["failures"] == 0  # the honest silos were served throughout
    clean = run_experiment(config.model_copy(update={"output": config.output.parent / "clean"}), text)
    for name, value in clean.parameters.items():
        np.testing.assert_allclose(fuzzed.parameters[name], value, rtol=0, atol=1e-6)
