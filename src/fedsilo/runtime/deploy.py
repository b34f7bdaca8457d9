"""A real deployment's two parties, built from their kits: the server's transport and a silo's runner.

``fedsilo server`` and ``fedsilo silo`` call these; the processes runtime calls them too, so the
one-machine runtime exercises exactly the code a real deployment runs.
"""

from __future__ import annotations

import hmac
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fedsilo.errors import ConfigError, KitError, RunEnded
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.plan import Plan
from fedsilo.experiment.provision import (
    KIT_FILE,
    Kit,
    credential_hash,
    file_sha256,
    kit_certificate_problems,
    load_kit,
)
from fedsilo.silo.agent import SiloAgent
from fedsilo.silo.store import SiloStore
from fedsilo.silo.task import TaskModule
from fedsilo.tracking.run_dir import RunDir
from fedsilo.transport.base import Transport
from fedsilo.transport.grpc.hub import Notify
from fedsilo.transport.grpc.server import UPLOAD_ALLOWANCE, CheckCredential, GrpcServerTransport, run_end
from fedsilo.transport.grpc.silo import Log, SiloRunner, SiloSettings, probe
from fedsilo.transport.grpc.wire import Tls
from fedsilo.transport.timing import CONNECT_TIMEOUT_S, STALL_TIMEOUT_S, ServerLimits
from fedsilo.wire.arrays import spec_of, wire_size

STATE = "state"  # the kit's sub-folder where a deployed silo keeps its state between rounds
INSECURE_WARNING = (
    "WARNING: --insecure: no TLS. Anyone on the network can read the model and updates, and a silo is "
    "identified only by the name it claims. Use this only to debug on one machine."
)


def credential_checker(kit: Kit) -> CheckCredential:
    """Accept a silo whose credential hashes to the server kit's record (re-read for silos added later)."""

    def check(silo: str, credential: str) -> bool:
        known = kit.silo_credentials or {}
        if silo not in known:  # `fedsilo provision --add-silo` may have added it since the server started
            try:
                known = json.loads((kit.path / KIT_FILE).read_text()).get("silos", {})
            except (OSError, json.JSONDecodeError):
                return False
        expected = known.get(silo)
        return expected is not None and hmac.compare_digest(credential_hash(credential), expected)

    return check


def tls_of(kit: Kit) -> Tls:
    return Tls(kit.ca_pem, kit.cert_pem, kit.key_pem)


def check_certificates(kit: Kit) -> None:
    """Refuse a kit whose certificates would fail the handshake (expired, another CA), naming why.

    Else the other side only sees its connection closed, and says "Socket closed".
    """
    problems = kit_certificate_problems(kit)
    if problems:
        raise KitError(
            f"kit {kit.path}: {'; '.join(problems)}",
            "provision a new kit (`fedsilo provision EXPERIMENT.yaml --add-silo NAME` for one silo) "
            "and check it with `fedsilo doctor --kit KIT`",
        )


def server_transport(
    config: ExperimentConfig,
    kit_path: Path,
    insecure: bool = False,
    listen: str | None = None,
    notify: Notify | None = None,
) -> GrpcServerTransport:
    """Serve the experiment with the server kit's certificate, on ``listen`` (default: the kit's address)."""
    kit = load_kit(kit_path)
    if kit.role != "server":
        raise KitError(f"{kit_path} is a {kit.role} kit, not the server's", "pass --kit KITS/server")
    if kit.experiment != config.name:
        raise KitError(
            f"kit {kit_path} is for experiment '{kit.experiment}', not '{config.name}'",
            "provision kits for this experiment",
        )
    check_certificates(kit)
    task_sha = file_sha256(config.task)
    if kit.task_sha256 and kit.task_sha256 != task_sha:
        raise KitError(
            f"{config.task} differs from the task module the kits were provisioned with",
            "give the silos the new task.py (or provision again), so that every party runs the same code",
        )
    return GrpcServerTransport(
        listen or kit.server_address,
        config.name,
        credential_checker(kit),
        None if insecure else tls_of(kit),
        task_sha256=task_sha,
        limits=ServerLimits(
            heartbeat_s=config.server.heartbeat_s,
            stall_timeout_s=config.server.stall_timeout_s,
            transfer_grace_s=config.server.transfer_grace_s,
            min_upload_rate=config.server.min_upload_rate,
        ),
        max_silos=max(len(config.silos), len(kit.silo_credentials or {})),
        notify=notify,
    )


@dataclass(frozen=True)
class SiloOptions:
    kit: Path
    data: Path
    task: Path | None = None  # default: the kit's copy
    server: str | None = None  # default: the kit's address
    device: str = "auto"
    insecure: bool = False
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    stall_timeout_s: float = STALL_TIMEOUT_S
    threads: int = 0  # torch threads; 0: all cores
    state: Path | None = None  # what the silo keeps between rounds; default: the kit's state/ folder


def silo_settings(kit: Kit, options: SiloOptions, task_path: Path, max_model_bytes: int | None = None) -> SiloSettings:
    """The runner's settings; ``max_model_bytes``: the most the silo's own model can take on the wire."""
    return SiloSettings(
        address=options.server or kit.server_address,
        name=kit.name,
        credential=kit.credential,
        tls=None if options.insecure else tls_of(kit),
        task_sha256=file_sha256(task_path),
        connect_timeout_s=options.connect_timeout_s,
        stall_timeout_s=options.stall_timeout_s,
        max_model_bytes=max_model_bytes,
        diagnose=lambda: "; ".join(kit_certificate_problems(kit)),
    )


def silo_kit(options: SiloOptions) -> tuple[Kit, Path]:
    kit = load_kit(options.kit)
    if kit.role != "silo":
        raise KitError(f"{options.kit} is the {kit.role}'s kit, not a silo's", "pass --kit KITS/<silo name>")
    task_path = Path(options.task or kit.task_path)
    if not task_path.is_file():
        raise KitError(f"task module {task_path} not found", "pass --task path/to/task.py")
    return kit, task_path


def run_silo(options: SiloOptions, log: Log | None = None) -> str:
    """Serve one silo until the server ends the run; returns the server's closing reason."""
    kit, task_path = silo_kit(options)
    if not Path(options.data).exists():
        raise ConfigError(f"data folder {options.data} does not exist", "pass this silo's own folder with --data")
    if not options.insecure:
        check_certificates(kit)
    task = TaskModule.load(task_path)
    if options.threads and "torch" in sys.modules:
        from fedsilo.client.torch import set_threads

        set_threads(options.threads)
    store = SiloStore(options.state or Path(options.kit) / STATE)
    agent = SiloAgent(kit.name, partial(task.make_client, [Path(options.data)], 0, options.device), store)
    bound = wire_size(spec_of(task.initial_parameters(0))) + UPLOAD_ALLOWANCE  # what the server's model can be
    done = SiloRunner(agent, silo_settings(kit, options, task_path, bound), log).run()
    if done.error:
        raise RunEnded(f"the server ended the run: {done.reason}", "its operator has the details in its output")
    return done.reason


def doctor(options: SiloOptions) -> list[tuple[str, bool, str]]:
    """Checks from a silo's machine: kit, certificates, task, data, server reachable, clocks. (name, ok, detail)."""
    import time

    from fedsilo.experiment.provision import expiry, kit_problems

    checks: list[tuple[str, bool, str]] = []
    kit, task_path = silo_kit(options)
    problems = kit_problems(kit)
    checks.append(("certificates", not problems, "; ".join(problems) or f"valid until {expiry(kit):%Y-%m-%d}"))
    same_task = not kit.task_sha256 or file_sha256(task_path) == kit.task_sha256
    checks.append(("task module", same_task, str(task_path) if same_task else f"{task_path} differs from the kit's"))
    data_ok = Path(options.data).exists() if options.data else True
    checks.append(("data folder", data_ok, str(options.data) if data_ok else f"{options.data} does not exist"))
    settings = silo_settings(kit, options, task_path)
    try:
        sent = time.time()
        reply = probe(settings)
        now = time.time()
    except Exception as exc:  # any failure to reach the server is a finding, not a crash
        detail = exc.one_line() if hasattr(exc, "one_line") else str(exc)
        checks.append(("server", False, f"{detail} -> check the address, firewall and that the server runs"))
        return checks
    checks.append(
        ("server", True, f"{settings.address} answers as experiment '{reply.experiment}', sees '{reply.peer}'")
    )
    skew = reply.server_time - (sent + now) / 2
    checks.append(
        (
            "clock",
            abs(skew) < 60,
            f"{skew:+.1f}s from the server" + (" -> sync this machine's clock (NTP)" if abs(skew) >= 60 else ""),
        )
    )
    return checks


class DeploymentRuntime:
    """A real deployment's server: the gRPC transport of the server kit, for silos on other machines."""

    def __init__(
        self,
        config: ExperimentConfig,
        kit: Path,
        insecure: bool = False,
        listen: str | None = None,
        notify: Notify | None = None,
        on_listen: Callable[[GrpcServerTransport], None] | None = None,
    ) -> None:
        self._config, self._kit, self._insecure, self._listen, self._notify = config, kit, insecure, listen, notify
        self._on_listen = on_listen
        self._transport: GrpcServerTransport | None = None

    def transport(self, plan: Plan, run: RunDir) -> Transport:
        self._transport = server_transport(self._config, self._kit, self._insecure, self._listen, self._notify)
        if self._on_listen is not None:
            self._on_listen(self._transport)
        return self._transport

    def close(self, failure: BaseException | None = None) -> None:
        """Stop serving; the silos are told how the run ended (why, if ``failure`` ended it)."""
        if self._transport is not None:
            self._transport.close(*run_end(failure))


def worker_threads(silos: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, silos))
