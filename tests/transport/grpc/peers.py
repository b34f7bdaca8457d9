"""Peers for the gRPC tests: a hand-driven silo, a link that can be cut, and a fit run in the background.

All of them use real sockets on 127.0.0.1; nothing is mocked. The :class:`Link` is a TCP relay a
silo connects through, so a test can break the connection under a running silo (as a flaky
hospital link would) and let it reconnect.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from fedsilo.experiment.provision import load_kit
from fedsilo.runtime.deploy import tls_of
from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc import fedsilo_pb2_grpc as pb_grpc
from fedsilo.transport.grpc.server import GrpcServerTransport
from fedsilo.transport.grpc.wire import CHANNEL_OPTIONS, CREDENTIAL_KEY, PROTOCOL, SILO_KEY, channel_credentials
from fedsilo.wire.instructions import FitInstructions, TrainSettings
from fedsilo.wire.messages import FitIns


class Silo:
    """A hand-driven silo: opens a session and reads its events, so a test can misbehave on purpose."""

    def __init__(self, kits: Path, name: str, port: int, hello: pb.Hello | None = None) -> None:
        kit = load_kit(kits / name)
        self.channel = grpc.secure_channel(
            f"127.0.0.1:{port}", channel_credentials(tls_of(kit)), options=CHANNEL_OPTIONS
        )
        self.stub = pb_grpc.OrchestratorStub(self.channel)
        self.md = [(CREDENTIAL_KEY, kit.credential), (SILO_KEY, name)]
        self.tasks: list[pb.Assignment] = []
        self.events: list[pb.Event] = []
        self.session = self.stub.Session(hello or pb.Hello(protocol=PROTOCOL), metadata=self.md)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.session:
                self.events.append(event)
                if event.HasField("assignment"):
                    self.tasks.append(event.assignment)
        except grpc.RpcError:
            pass

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("kind")) for e in self.events]

    def close(self) -> None:
        self.session.cancel()
        self.channel.close()


def fit_in_background(server: GrpcServerTransport, silos: list[str], params: Any, timeout: float) -> list[Any]:
    """``[thread, *replies]``: the fit runs in a thread; join it, then read the replies."""
    replies: list[Any] = []
    thread = threading.Thread(
        target=lambda: replies.extend(
            server.fit(silos, FitIns(1, params, FitInstructions(TrainSettings())), timeout=timeout)
        ),
        daemon=True,
    )
    thread.start()
    replies.append(thread)
    return replies


class Link:
    """A TCP relay on 127.0.0.1 to ``port``; :meth:`cut` breaks every connection through it at once."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:  # the server is gone: so is this connection
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def cut(self) -> None:
        """Reset every connection (as a broken link does); new ones are relayed again."""
        with self._lock:
            socks, self._open = self._open, []
        for s in socks:  # shut down first: that wakes the relay's threads blocked reading them
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(1 << 16):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_RDWR)


def until(predicate: Callable[[], object], timeout: float) -> bool:
    """Poll ``predicate`` every 50 ms for at most ``timeout`` seconds."""
    from fedsilo.transport.grpc.server import wait_until

    return wait_until(lambda: bool(predicate()), timeout)
