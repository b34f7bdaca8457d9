"""Kits from a real `provision` and a server on 127.0.0.1 (an OS-chosen port), for the gRPC transport tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedsilo.experiment.config import load_config
from fedsilo.experiment.provision import SERVER, load_kit, provision
from fedsilo.runtime.deploy import credential_checker, tls_of
from fedsilo.transport.grpc.server import GrpcServerTransport
from fedsilo.transport.timing import ServerLimits


@pytest.fixture
def kits(make_experiment, tmp_path: Path) -> Path:
    config, _ = load_config(make_experiment())
    provision(config, tmp_path / "kits", "127.0.0.1:1")
    return tmp_path / "kits"


@pytest.fixture
def server(kits: Path) -> Iterator[GrpcServerTransport]:
    """Heartbeats every 0.5 s and a 2 s stall limit keep the tests short."""
    kit = load_kit(kits / SERVER)
    limits = ServerLimits(heartbeat_s=0.5, stall_timeout_s=2)
    transport = GrpcServerTransport("127.0.0.1:0", "exp", credential_checker(kit), tls_of(kit), limits=limits)
    yield transport
    transport.close()
