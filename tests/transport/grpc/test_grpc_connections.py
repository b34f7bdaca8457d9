"""Connections before anyone is known, over real sockets on 127.0.0.1: caps, the handshake deadline, TLS mix-ups.

Idle TCP connections (opened, nothing sent) are capped per peer address and closed after the
handshake deadline, and the server says so; an honest silo from another address is served
meanwhile. A silo told why it cannot connect names the cause: an expired certificate of its own,
a TLS server met with ``--insecure``, a plain-text server met with TLS.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from peers import until

from fedsilo.errors import ConnectionFailed, KitError
from fedsilo.experiment.provision import CA_CERT, CA_DIR, CA_KEY, CERT, KEY, SERVER, load_kit
from fedsilo.runtime.deploy import SiloOptions, credential_checker, run_silo, tls_of
from fedsilo.transport.grpc.server import GrpcServerTransport
from fedsilo.transport.grpc.silo import SiloRunner, SiloSettings
from fedsilo.transport.timing import ServerLimits
from fedsilo.wire.instructions import FitInstructions, TrainSettings
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, FitIns, FitRes

PER_PEER = 4


class AddOne:
    def fit(self, ins: FitIns) -> FitRes:
        return FitRes("a", {k: v + 1 for k, v in ins.parameters.items()}, 3)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return EvaluateRes("a", 0.0, 1)

    def exchange(self, step: str, payload: bytes) -> bytes:
        return b""


def _connect_from(source: str, port: int, send: bytes = b"") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    if send:
        s.sendall(send)
    return s


def _still_open(s: socket.socket) -> bool:
    s.settimeout(0.02)
    try:
        return s.recv(1) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def test_idle_connections_are_capped_per_address_closed_at_the_handshake_deadline_and_logged(kits: Path) -> None:
    notes: list[str] = []
    kit = load_kit(kits / SERVER)
    limits = ServerLimits(heartbeat_s=0.5, stall_timeout_s=2, handshake_timeout_s=1.5, connections_per_peer=PER_PEER)
    server = GrpcServerTransport(
        "127.0.0.1:0", "exp", credential_checker(kit), tls_of(kit), limits=limits, notify=notes.append
    )
    idle: list[socket.socket] = []
    try:
        idle = [_connect_from("127.0.0.2", server.port) for _ in range(40)]
        partial = _connect_from("127.0.0.3", server.port, send=b"\x16\x03\x01\x00")  # a TLS record begun, never ended
        idle.append(partial)
        time.sleep(0.5)
        assert sum(_still_open(s) for s in idle[:-1]) == PER_PEER  # the rest were refused at once
        a = load_kit(kits / "a")
        runner = SiloRunner(AddOne(), SiloSettings(f"127.0.0.1:{server.port}", "a", a.credential, tls_of(a)))
        threading.Thread(target=runner.run, daemon=True).start()
        assert until(lambda: server.available() == ["a"], 10)  # another address is served meanwhile
        [reply] = server.fit(["a"], FitIns(1, {"w": np.ones(3, np.float32)}, FitInstructions(TrainSettings())), 10)
        assert isinstance(reply, FitRes)
        assert until(lambda: not any(_still_open(s) for s in idle), 5)  # the partial one by gRPC's deadline
        assert server.available() == ["a"]  # the honest silo's connection is untouched
    finally:
        for s in idle:
            s.close()
        server.close()
    said = " | ".join(notes)
    assert "127.0.0.2" in said and f"{PER_PEER} connections open" in said  # the refusals were logged
    assert "no TLS handshake within 1.5s" in said  # and the idle ones closed at the deadline


def _reissue_expired(kits: Path, name: str) -> None:
    """Replace ``name``'s certificate with one the same CA signed that expired yesterday."""
    ca_key = serialization.load_pem_private_key((kits / CA_DIR / CA_KEY).read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((kits / CA_DIR / CA_CERT).read_bytes())
    old = x509.load_pem_x509_certificate((kits / name / CERT).read_bytes())
    key = serialization.load_pem_private_key((kits / name / KEY).read_bytes(), password=None)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
    )
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    (kits / name / CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_a_silo_with_an_expired_certificate_says_so(kits: Path, server, tmp_path: Path) -> None:
    _reissue_expired(kits, "a")
    options = SiloOptions(kits / "a", tmp_path, server=f"127.0.0.1:{server.port}", connect_timeout_s=2.0)
    with pytest.raises(KitError) as info:
        run_silo(options)
    assert "expired on" in info.value.message  # not "Socket closed"
    # a certificate that expires while the silo runs: the connection's error names it too
    kit = load_kit(kits / "a")
    settings = SiloSettings(
        f"127.0.0.1:{server.port}", "a", kit.credential, tls_of(kit), connect_timeout_s=2.0,
        diagnose=lambda: "the certificate expired on yesterday",
    )  # fmt: skip
    with pytest.raises(ConnectionFailed) as failed:
        SiloRunner(AddOne(), settings).run()
    assert "the certificate expired on yesterday" in failed.value.message


def test_an_insecure_silo_meeting_a_tls_server_is_told_so(kits: Path, server) -> None:
    kit = load_kit(kits / "a")
    settings = SiloSettings(f"127.0.0.1:{server.port}", "a", kit.credential, None, connect_timeout_s=2.0)
    with pytest.raises(ConnectionFailed) as info:
        SiloRunner(AddOne(), settings).run()
    assert "the server speaks TLS" in info.value.message and "--insecure" in info.value.message


def test_a_tls_silo_meeting_a_plain_text_server_is_told_so(kits: Path) -> None:
    kit = load_kit(kits / SERVER)
    plain = GrpcServerTransport("127.0.0.1:0", "exp", credential_checker(kit), None)
    try:
        a = load_kit(kits / "a")
        settings = SiloSettings(f"127.0.0.1:{plain.port}", "a", a.credential, tls_of(a), connect_timeout_s=2.0)
        with pytest.raises(ConnectionFailed) as info:
            SiloRunner(AddOne(), settings).run()
    finally:
        plain.close()
    assert "does not speak TLS" in info.value.message and "--insecure" in info.value.message
