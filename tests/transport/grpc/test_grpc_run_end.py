"""How a run ends for its silos, over real gRPC on 127.0.0.1: why it ended, abandoned work, hung training.

A silo is told when the run failed (and exits non-zero), when the server is gone for good, and
when an assignment of its own was abandoned (it drops it: nothing is uploaded for it); a silo
whose training hangs still exits within a bounded grace once the run is over.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from peers import fit_in_background, until

from fedsilo.errors import ConnectionFailed, RoundFailed, RunEnded
from fedsilo.experiment.config import load_config
from fedsilo.experiment.plan import build_plan
from fedsilo.experiment.provision import SERVER, load_kit, provision
from fedsilo.runtime.deploy import DeploymentRuntime, SiloOptions, run_silo, tls_of
from fedsilo.runtime.run import run
from fedsilo.transport.grpc.silo import SiloRunner, SiloSettings
from fedsilo.wire.instructions import FitInstructions, TrainSettings
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes

PARAMS = {"w": np.arange(4, dtype=np.float32)}


def _outcome(fn: Any, *args: Any) -> object:
    try:
        return fn(*args)
    except Exception as exc:
        return exc


def test_a_failed_run_tells_its_silos_why_and_each_exits_with_an_error(make_experiment, tmp_path: Path) -> None:
    exp = make_experiment(
        extra={"server": {"heartbeat_s": 0.5, "wait_timeout_s": 30}, "strategy": {"min_available_clients": 3}}
    )
    for name in "abc":
        (exp.parent / "data" / name / "RAISE").write_text("")  # every fit fails: round 1 fails, the run stops
    config, text = load_config(exp)
    provision(config, tmp_path / "kits", "127.0.0.1:1")
    outcomes: dict[str, object] = {}

    def start_silos(transport: Any) -> None:
        for name in "abc":
            options = SiloOptions(
                tmp_path / "kits" / name, exp.parent / "data" / name, server=f"127.0.0.1:{transport.port}"
            )
            threading.Thread(
                target=lambda n=name, o=options: outcomes.__setitem__(n, _outcome(run_silo, o)), daemon=True
            ).start()

    runtime = DeploymentRuntime(config, tmp_path / "kits" / "server", listen="127.0.0.1:0", on_listen=start_silos)
    with pytest.raises(RoundFailed):
        run(build_plan(config, silo_data=False), runtime, [], text)
    assert until(lambda: len(outcomes) == 3, 10)
    for outcome in outcomes.values():
        assert isinstance(outcome, RunEnded), outcome  # not "the run is over" and exit 0
        assert outcome.exit_code != 0
        assert "RoundFailed" in outcome.message and "too few silos answered" in outcome.message.lower()
        assert "min_fit_clients" not in outcome.message  # the server's details (other silos' failures) stay there


SERVE = (
    "import sys, time\n"
    "from fedsilo.experiment.provision import load_kit\n"
    "from fedsilo.runtime.deploy import credential_checker, tls_of\n"
    "from fedsilo.transport.grpc.server import GrpcServerTransport\n"
    "kit = load_kit(sys.argv[1])\n"
    "t = GrpcServerTransport('127.0.0.1:0', 'exp', credential_checker(kit), tls_of(kit))\n"
    "print(t.port, flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_silo_that_loses_the_server_for_good_exits_with_a_clear_error(kits: Path) -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(kits / SERVER)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        kit = load_kit(kits / "a")
        settings = SiloSettings(f"127.0.0.1:{port}", "a", kit.credential, tls_of(kit), connect_timeout_s=2.0)
        log: list[str] = []
        outcome: list[object] = []
        runner = SiloRunner(Quick(), settings, log.append)
        thread = threading.Thread(target=lambda: outcome.append(_outcome(runner.run)), daemon=True)
        thread.start()
        assert until(lambda: any("connected" in line for line in log), 10)
        server.kill()  # the server crashes: no Done
        thread.join(15)
    finally:
        server.kill()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
    [failed] = outcome
    assert isinstance(failed, ConnectionFailed) and not isinstance(failed, RunEnded)
    assert "lost the server" in failed.message and "without ending the run" in failed.message
    assert "--resume" in (failed.fix or "")


class Quick:
    def __init__(self) -> None:
        self.fits = 0

    def fit(self, ins: FitIns) -> FitRes:
        self.fits += 1
        return FitRes("a", dict(ins.parameters), 2)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        return EvaluateRes("a", 0.0, 1)

    def exchange(self, step: str, payload: bytes) -> bytes:
        return b""


class Hangs(Quick):
    """Its first fit hangs until the test lets it go (as training stuck in user code would)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def fit(self, ins: FitIns) -> FitRes:
        if self.fits == 0:
            self.fits += 1
            self.release.wait(30)
            return FitRes("a", dict(ins.parameters), 2)
        return super().fit(ins)


def _runner(kits: Path, port: int, endpoint: Quick, log: list[str], **kw: Any) -> tuple[SiloRunner, threading.Thread]:
    kit = load_kit(kits / "a")
    settings = SiloSettings(f"127.0.0.1:{port}", "a", kit.credential, tls_of(kit), **kw)
    runner = SiloRunner(endpoint, settings, log.append)  # type: ignore[arg-type]
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread


def test_an_abandoned_assignment_is_cancelled_at_the_silo_and_nothing_is_uploaded_for_it(kits: Path, server) -> None:
    log: list[str] = []
    endpoint = Hangs()
    runner, thread = _runner(kits, server.port, endpoint, log)
    uploads: list[str] = []
    upload = runner.transfers.upload
    runner.transfers.upload = lambda job, data: (uploads.append(job.assignment_id), upload(job, data))[1]  # type: ignore[method-assign]
    assert until(lambda: server.available() == ["a"], 10)
    [late] = server.fit(["a"], FitIns(1, PARAMS, FitInstructions(TrainSettings())), timeout=1.0)
    assert isinstance(late, Failure) and late.kind == "timeout"
    assert until(lambda: any("cancelled by the server" in line for line in log), 5), log
    endpoint.release.set()  # the stuck training finishes after all
    assert until(lambda: any("dropped" in line for line in log), 5), log
    assert uploads == []  # nothing went up for the abandoned assignment
    [again] = server.fit(["a"], FitIns(2, PARAMS, FitInstructions(TrainSettings())), timeout=10)
    assert isinstance(again, FitRes)  # the silo serves the next round
    assert len(uploads) == 1
    server.close()
    thread.join(10)


def test_a_silo_whose_training_hangs_exits_within_a_grace_when_the_run_ends(kits: Path, server) -> None:
    log: list[str] = []
    endpoint = Hangs()
    runner, thread = _runner(kits, server.port, endpoint, log, exit_grace_s=1.0)
    try:
        assert until(lambda: server.available() == ["a"], 10)
        replies = fit_in_background(server, ["a"], PARAMS, timeout=30)
        assert until(lambda: endpoint.fits, 10)
        started = time.monotonic()
        server.close()  # the run ends while the silo's training is stuck
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 8  # the server's close (up to 5 s) plus the silo's 1 s grace
        assert any("still running" in line for line in log), log
        replies[0].join(5)
    finally:
        endpoint.release.set()
