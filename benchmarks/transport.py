"""How fast a large update crosses the gRPC + mutual TLS transport, and what it costs on the wire.

One silo and the server on 127.0.0.1, real certificates from `provision`, the real silo runner.
Each measurement is one round: the silo downloads the global model and uploads an update of the
same size. Printed as one JSON line per measurement:

- ``upload``: seconds to send the update from the silo to the server (chunked, TLS) and MB/s;
- ``wire``: bytes that crossed the TCP connection during the round (counted by a forwarding
  proxy between silo and server) divided by the raw tensor bytes moved (model down + update up).

    python benchmarks/transport.py              # 1 GB update (needs ~8 GB of memory)
    python benchmarks/transport.py --mb 64      # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from fedsilo.experiment.config import load_config
from fedsilo.experiment.provision import SERVER, load_kit, provision
from fedsilo.runtime.deploy import credential_checker, tls_of
from fedsilo.transport.grpc.server import GrpcServerTransport, wait_until
from fedsilo.transport.grpc.silo import SiloRunner, SiloSettings
from fedsilo.transport.grpc.transfers import SiloTransfers
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, FitIns, FitRes


class CountingProxy:
    """Forwards 127.0.0.1:port to a target and counts the bytes in both directions."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.bytes = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 20):
                with self._lock:
                    self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


class Echo:
    """A silo endpoint that returns the model it received as its update (no training: transport only)."""

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes("bench", ins.parameters, 1)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return EvaluateRes("bench", 0.0, 1)


class TimedTransfers(SiloTransfers):
    upload_s = 0.0

    def upload(self, job, data) -> None:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        super().upload(job, data)
        TimedTransfers.upload_s = time.perf_counter() - started


class TimedRunner(SiloRunner):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        t = self.transfers
        self.transfers = TimedTransfers(t.stub, t.metadata, t.stall_timeout_s, t.over, t.log, t.cancelled)


def kits_in(folder: Path) -> Path:
    (folder / "task.py").write_text("def model():\n    return {}\n")
    (folder / "exp.yaml").write_text(
        yaml.safe_dump({"name": "bench", "task": "task.py", "silos": [{"name": "bench", "data": "."}], "rounds": 1})
    )
    config, _ = load_config(folder / "exp.yaml")
    provision(config, folder / "kits", "127.0.0.1:1")
    return folder / "kits"


def one_round(kits: Path, params: dict[str, np.ndarray], via_proxy: bool) -> dict[str, float]:
    server_kit = load_kit(kits / SERVER)
    server = GrpcServerTransport("127.0.0.1:0", "bench", credential_checker(server_kit), tls_of(server_kit))
    proxy = CountingProxy(server.port) if via_proxy else None
    silo_kit = load_kit(kits / "bench")
    port = proxy.port if proxy else server.port
    settings = SiloSettings(f"127.0.0.1:{port}", "bench", silo_kit.credential, tls_of(silo_kit))
    runner = TimedRunner(Echo(), settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.available() == ["bench"], 30), "silo did not connect"
        before = proxy.bytes if proxy else 0
        started = time.perf_counter()
        replies = list(server.fit(["bench"], FitIns(1, params), timeout=3600))
        round_s = time.perf_counter() - started
        assert isinstance(replies[0], FitRes), replies[0]
        moved = proxy.bytes - before if proxy else 0
    finally:
        server.close()
        thread.join(30)
        if proxy:
            proxy.close()
    return {"round_s": round_s, "upload_s": TimedTransfers.upload_s, "wire_bytes": moved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="update size in MiB (default 1024)")
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    params = {f"layer{i}": np.random.default_rng(i).standard_normal(size // 16, dtype=np.float32) for i in range(4)}
    raw = sum(v.nbytes for v in params.values())
    with tempfile.TemporaryDirectory() as tmp:
        kits = kits_in(Path(tmp))
        direct = one_round(kits, params, via_proxy=False)
        print(
            json.dumps(
                {
                    "measurement": "upload",
                    "update_mb": round(raw / 2**20, 1),
                    "upload_s": round(direct["upload_s"], 2),
                    "upload_mb_per_s": round(raw / 2**20 / direct["upload_s"], 1),
                    "round_s": round(direct["round_s"], 2),
                    "tls": True,
                }
            ),
            flush=True,
        )
        proxied = one_round(kits, params, via_proxy=True)
        print(
            json.dumps(
                {
                    "measurement": "wire",
                    "raw_tensor_bytes": 2 * raw,
                    "wire_bytes": int(proxied["wire_bytes"]),
                    "wire_over_raw": round(proxied["wire_bytes"] / (2 * raw), 4),
                    "target": 1.02,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
