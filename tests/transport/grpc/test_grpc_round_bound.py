"""A round's total time is bounded over real gRPC on 127.0.0.1, however a valid silo trickles its upload.

Past the round's deadline an upload in progress is waited for only while it keeps the minimum
rate, and never longer than the transfer grace; a fast upload past the deadline is still taken
(see test_grpc_transfers.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
from peers import Silo, fit_in_background, until

from fedsilo.experiment.provision import SERVER, load_kit
from fedsilo.runtime.deploy import credential_checker, tls_of
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.server import GrpcServerTransport
from fedsilo.transport.grpc.wire import CHUNK_BYTES
from fedsilo.transport.timing import ServerLimits
from fedsilo.wire.arrays import to_bytes


def _trickle(silo: Silo, task: pb.Assignment, update: bytes, size: int, pause: float, stop: threading.Event) -> None:
    """Upload ``update`` ``size`` bytes at a time, ``pause`` seconds apart, until ``stop`` or the server cuts it."""
    header = pb.UploadHeader(
        assignment_id=task.assignment_id, total_bytes=len(update), sha256=hashlib.sha256(update).hexdigest()
    )

    def parts() -> Iterator[pb.UploadPart]:
        yield pb.UploadPart(header=header)
        for i in range(0, len(update), size):
            if stop.wait(pause):
                return
            yield pb.UploadPart(data=update[i : i + size])

    with contextlib.suppress(grpc.RpcError):
        silo.stub.Upload(parts(), metadata=silo.md, timeout=30)


def _round_time(server: GrpcServerTransport, kits: Path, deadline: float, size: int, pause: float) -> tuple[float, str]:
    silo = Silo(kits, "a", server.port)
    assert until(lambda: server.available() == ["a"], 10)
    params = {"w": np.zeros(CHUNK_BYTES // 2, np.float32)}  # 2 MiB
    started = time.monotonic()
    replies = fit_in_background(server, ["a"], params, timeout=deadline)
    assert until(lambda: silo.tasks, 10)
    stop = threading.Event()
    uploader = threading.Thread(
        target=_trickle, args=(silo, silo.tasks[0], to_bytes(params), size, pause, stop), daemon=True
    )
    uploader.start()
    replies[0].join(30)
    took = time.monotonic() - started
    stop.set()
    uploader.join(10)
    assert not uploader.is_alive()  # the server let go of the upload's call too
    silo.close()
    return took, replies[1].kind


def test_a_trickling_upload_does_not_hold_the_round_past_its_deadline(kits: Path, server) -> None:
    # one byte every 0.3 s never stalls (stall limit 2 s) but is far below the minimum rate
    took, kind = _round_time(server, kits, deadline=1.0, size=1, pause=0.3)
    assert kind == "timeout"
    assert took < 3.0  # it was held for as long as the silo kept trickling (8 s and more) before


def test_an_upload_at_the_minimum_rate_gets_the_grace_and_no_more(kits: Path) -> None:
    kit = load_kit(kits / SERVER)
    limits = ServerLimits(heartbeat_s=0.5, stall_timeout_s=2, transfer_grace_s=1.5, min_upload_rate=1024)
    server = GrpcServerTransport("127.0.0.1:0", "exp", credential_checker(kit), tls_of(kit), limits=limits)
    try:
        # 8 KiB every 0.2 s: 40 KiB/s, above the minimum rate; 2 MiB would take 50 s
        took, kind = _round_time(server, kits, deadline=1.0, size=8 * 1024, pause=0.2)
    finally:
        server.close()
    assert kind == "timeout"
    assert 2.3 < took < 4.5  # the deadline (1 s) plus the grace (1.5 s), not the 50 s the upload needs
