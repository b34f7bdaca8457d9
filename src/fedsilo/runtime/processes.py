"""The processes runtime: the real protocol on one machine, one OS process per silo.

It provisions kits into the run folder, serves the experiment over gRPC with mutual TLS on
127.0.0.1, and starts ``fedsilo silo`` once per silo with only that silo's data folder. The silo
processes run exactly what a deployed silo runs. They are torn down at the end, on failure and
on Ctrl-C; on Linux they also die with this process if it is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from fedsilo.errors import ConnectionFailed
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.plan import Plan
from fedsilo.experiment.provision import SERVER, provision
from fedsilo.runtime.deploy import server_transport, worker_threads
from fedsilo.tracking.run_dir import RunDir
from fedsilo.transport.base import Transport
from fedsilo.transport.grpc.hub import Notify
from fedsilo.transport.grpc.server import GrpcServerTransport, run_end
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, ExchangeRes, Failure, FitIns, FitRes

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


PARENT_ENV = "FEDSILO_DIE_WITH_PARENT"


def die_with_parent() -> None:
    """In a silo process started by this runtime: exit when the run's process dies (Linux), even if killed.

    Done in the child at start-up rather than between fork and exec, so that starting silos never
    forks a process that runs gRPC threads.
    """
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)


def silo_command(kit: Path, data: Path, address: str, device: str, threads: int, stall_s: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedsilo",
        "silo",
        "--kit",
        str(kit),
        "--data",
        str(data),
        "--server",
        address,
        "--device",
        device,
        "--threads",
        str(threads),
        "--connect-timeout",
        "30",
        "--stall-timeout",
        str(stall_s),
    ]


class ProcessesTransport:
    """The gRPC server transport plus the silo processes it serves; closing it stops them all."""

    def __init__(self, server: GrpcServerTransport, procs: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
        self.server = server
        self.procs = procs
        self.logs = logs
        self._files: list[IO[bytes]] = []

    def available(self) -> list[str]:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code not in (None, 0) and not self.server.hub.has_seen(name):
                log = self.logs / f"{name}.log"
                raise ConnectionFailed(
                    f"silo process '{name}' exited with code {code} before connecting: {_last_line(log)}",
                    f"see {log}",
                )
        return self.server.available()

    def fit(self, silos: Sequence[str], ins: FitIns, timeout: float) -> Iterator[FitRes | Failure]:
        return self.server.fit(silos, ins, timeout)

    def evaluate(self, silos: Sequence[str], ins: EvaluateIns, timeout: float) -> Iterator[EvaluateRes | Failure]:
        return self.server.evaluate(silos, ins, timeout)

    def exchange(
        self, step: str, messages: Mapping[str, bytes], timeout: float, max_reply_bytes: int
    ) -> Iterator[ExchangeRes | Failure]:
        return self.server.exchange(step, messages, timeout, max_reply_bytes)

    def close(self, reason: str = "the run is over", error: bool = False) -> None:
        """Tell the silos the run is over (and why, if it failed); those still busy are terminated, then killed."""
        self.server.close(reason, error)
        for signal_to_send in (None, signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + 5.0
            for proc in self.procs.values():
                if proc.poll() is None and signal_to_send is not None:
                    proc.send_signal(signal_to_send)
            for proc in self.procs.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if all(proc.poll() is not None for proc in self.procs.values()):
                return


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def start_processes(config: ExperimentConfig, run: RunDir, notify: Notify | None = None) -> ProcessesTransport:
    """Kits in the run folder (made once, reused on resume), the server on loopback, one process per silo."""
    kits = run.path / "kits"
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    if not (kits / SERVER).exists():
        provision(config, kits, server_address=address)
    server = server_transport(config, kits / SERVER, listen=address, notify=notify)
    logs = run.path / "logs"
    logs.mkdir(exist_ok=True)
    threads = worker_threads(len(config.silos))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
    try:
        for silo in config.silos:
            with open(logs / f"{silo.name}.log", "ab") as log:
                procs[silo.name] = subprocess.Popen(
                    silo_command(
                        kits / silo.name,
                        silo.data,
                        address,
                        config.train.device,
                        threads,
                        config.server.stall_timeout_s,
                    ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C reaches this process only; it stops the silos itself
                    env=env,
                )
        transport = ProcessesTransport(server, procs, logs)
        _wait_for_all(transport, config.server.wait_timeout_s)
    except BaseException:
        ProcessesTransport(server, procs, logs).close()
        raise
    return transport


def _wait_for_all(transport: ProcessesTransport, timeout: float) -> None:
    """Every silo we started joins before round 1, so that rounds sample from all of them, as in simulation.

    A silo that has not connected by ``timeout`` is left to the round loop, which runs with
    ``min_available_clients`` and names the missing ones.
    """
    deadline = time.monotonic() + timeout
    while len(transport.available()) < len(transport.procs) and time.monotonic() < deadline:
        time.sleep(0.05)


class ProcessesRuntime:
    """``runtime.kind: processes``: kits in the run folder, the server on loopback, one process per silo."""

    def __init__(self, config: ExperimentConfig, notify: Notify | None = None) -> None:
        self._config, self._notify = config, notify
        self._transport: ProcessesTransport | None = None

    def transport(self, plan: Plan, run: RunDir) -> Transport:
        self._transport = start_processes(self._config, run, self._notify)
        return self._transport

    def close(self, failure: BaseException | None = None) -> None:
        if self._transport is not None:
            self._transport.close(*run_end(failure))
