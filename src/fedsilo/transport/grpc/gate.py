"""The server's front door: TCP connections before anyone is known, capped per address and timed.

gRPC itself has a handshake deadline (``grpc.server_handshake_timeout_ms``, set from the same
setting) and a global connection cap, but nothing per peer, and it says nothing when it drops a
connection. So the server listens here: one address may hold at most ``per_peer`` connections
(more are closed at once), a connection that sends nothing within ``handshake_s`` is closed, both
are logged (a line per address at most every ``LOG_EVERY_S``), and every other connection is
relayed to gRPC, listening on a loopback port of its own, which then gives it ``handshake_s``
more to finish its TLS handshake. A connection waiting for its first byte costs one file descriptor and no
thread; a relayed one costs three descriptors and two threads that copy its bytes.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable

LOG_EVERY_S = 10.0
RELAY_BYTES = 256 * 1024
Log = Callable[[str], None]


def listen(address: str) -> socket.socket:
    """A listening socket on ``HOST:PORT`` (``0.0.0.0``: every IPv4 address, ``[::]``: every address; port 0: any)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "*"):
        return socket.create_server(("", int(port)), backlog=1024)
    if host == "::":
        dual = socket.has_dualstack_ipv6()
        return socket.create_server(("::", int(port)), family=socket.AF_INET6, backlog=1024, dualstack_ipv6=dual)
    found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    family, *_, where = next((f for f in found if f[0] == socket.AF_INET), found[0])  # IPv4 first, as silos dial
    return socket.create_server(where[:2], family=family, backlog=1024)


def connection_budget() -> int:
    """How many connections this process may hold: a share of its file descriptors (a relayed one takes three)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, (soft if soft != resource.RLIM_INFINITY else 65536) // 8)


class Gate:
    """Accepts on ``address`` and relays each connection to gRPC on ``127.0.0.1:backend`` (see the module)."""

    def __init__(self, address: str, per_peer: int, handshake_s: float, log: Log) -> None:
        self._listener = listen(address)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self.backend = 0  # set before start()
        self._per_peer, self._handshake_s, self._log = per_peer, handshake_s, log
        self._budget = connection_budget()
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()  # connections per peer address, waiting or relayed
        self._waiting: dict[socket.socket, tuple[str, float]] = {}
        self._relayed: set[socket.socket] = set()
        self._names: dict[int, str] = {}  # the relay's local port -> the real peer
        self._said: dict[tuple[str, str], tuple[float, int]] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fedsilo-gate")

    def start(self, backend: int) -> None:
        self.backend = backend
        self._thread.start()

    def peer_of(self, grpc_peer: str) -> str:
        """gRPC's name of a relayed caller (``ipv4:127.0.0.1:PORT``) -> the address it connected from."""
        port = grpc_peer.rpartition(":")[2]
        with self._lock:
            return self._names.get(int(port), grpc_peer) if port.isdigit() else grpc_peer

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._relay(key.fileobj)  # type: ignore[arg-type]
            self._expire(time.monotonic())

    def _accept(self) -> None:
        for _ in range(256):  # a burst at a time, so that waiting connections are still timed
            try:
                conn, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors: back off a little
                self._say("accept", "*", f"cannot accept connections ({exc}); raise `ulimit -n`")
                time.sleep(0.05)
                return
            peer = str(addr[0])
            with self._lock:
                full = self._open[peer] >= self._per_peer or sum(self._open.values()) >= self._budget
                if not full:
                    self._open[peer] += 1
            if full:
                _reset(conn)
                self._say("cap", peer, f"refused connections from {peer}: it has {self._per_peer} connections open")
                continue
            self._waiting[conn] = (peer, time.monotonic() + self._handshake_s)
            self._selector.register(conn, selectors.EVENT_READ)

    def _expire(self, now: float) -> None:
        for conn, (peer, deadline) in list(self._waiting.items()):
            if now > deadline:
                self._selector.unregister(conn)
                del self._waiting[conn]
                _reset(conn)
                self._release(peer)
                idle = f"closed connections from {peer}: no TLS handshake within {self._handshake_s:g}s"
                self._say("idle", peer, idle)

    def _relay(self, conn: socket.socket) -> None:
        """The first bytes arrived: hand the connection to gRPC through a relay."""
        self._selector.unregister(conn)
        peer, _ = self._waiting.pop(conn)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.backend), timeout=5)
        except OSError:
            _reset(conn)
            self._release(peer)
            return
        name = conn.getpeername()
        local = int(upstream.getsockname()[1])
        with self._lock:
            self._names[local] = f"{peer}:{name[1]}"
            self._relayed.update((conn, upstream))
        done = _Pair(lambda: self._ended(peer, local, conn, upstream))
        for src, dst in ((conn, upstream), (upstream, conn)):
            src.settimeout(None)
            src.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_pump, args=(src, dst, done), daemon=True, name="fedsilo-relay").start()

    def _ended(self, peer: str, local: int, *socks: socket.socket) -> None:
        with self._lock:
            self._names.pop(local, None)
            self._relayed.difference_update(socks)
        for s in socks:
            s.close()
        self._release(peer)

    def _release(self, peer: str) -> None:
        with self._lock:
            self._open[peer] -= 1
            if self._open[peer] <= 0:
                del self._open[peer]

    def _say(self, kind: str, peer: str, line: str) -> None:
        """Log ``line`` for (kind, peer) at once, then at most every LOG_EVERY_S, with how many since."""
        now = time.monotonic()
        last, count = self._said.get((kind, peer), (-LOG_EVERY_S, 0))
        if now - last < LOG_EVERY_S:
            self._said[(kind, peer)] = (last, count + 1)
            return
        if len(self._said) > 4096:  # many addresses: forget those not heard from lately
            self._said = {k: v for k, v in self._said.items() if now - v[0] < LOG_EVERY_S}
        self._said[(kind, peer)] = (now, 0)
        self._log(line + (f" ({count} more since the last such line)" if count else ""))

    def close(self) -> None:
        """Stop accepting and drop every connection, waiting or relayed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self._listener.close()
        for conn in list(self._waiting):
            _reset(conn)
        self._waiting.clear()
        with self._lock:
            relayed = list(self._relayed)
        for s in relayed:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self._selector.close()


class _Pair:
    """Calls ``ended`` once both directions of a relayed connection have stopped."""

    def __init__(self, ended: Callable[[], None]) -> None:
        self._ended, self._left, self._lock = ended, 2, threading.Lock()

    def one_done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._ended()


def _pump(src: socket.socket, dst: socket.socket, pair: _Pair) -> None:
    """Copy ``src`` to ``dst`` until either side ends; then end both (the other pump stops too)."""
    buf = memoryview(bytearray(RELAY_BYTES))
    with contextlib.suppress(OSError):
        while n := src.recv_into(buf):
            dst.sendall(buf[:n])
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
    pair.one_done()


def _reset(conn: socket.socket) -> None:
    """Close at once with a reset: the peer learns now, and no TIME_WAIT is left behind."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
