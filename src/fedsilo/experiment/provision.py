"""Certificates and credentials for a deployment: one certificate authority per experiment, one kit per party.

``fedsilo provision`` makes, under ``--out``:

- ``ca/``: the experiment's CA certificate and key. The key signs kits and nothing else; keep it
  offline (it is needed again only to add a silo).
- ``server/``: the server's certificate and key, the CA certificate, and ``kit.json`` with the
  address to listen on and a hash of each silo's credential.
- ``<silo>/``: the silo's certificate (its name is the certificate's common name: that is its
  identity, it cannot act as another silo), its key, the CA certificate, the server's address,
  a random credential (a second factor sent with every call), and a copy of the task module.

Keys and credentials are written owner-only (0600). Nothing is overwritten: re-running on an
existing folder is an error, and ``--add-silo`` issues one new kit without touching the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError, KitError
from fedsilo.experiment.certificates import Issued, certificate_problems, issue, make_ca, not_after
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.sections import SILO_NAME
from fedsilo.wire.files import dumps

CA_DIR, SERVER = "ca", "server"
KIT_FILE, CA_CERT, CA_KEY = "kit.json", "ca.crt", "ca.key"
CERT, KEY, CREDENTIAL, TASK = "party.crt", "party.key", "credential", "task.py"
DEFAULT_DAYS = 365


@dataclass(frozen=True)
class Kit:
    """One party's kit, read from its folder."""

    path: Path
    role: str  # server | silo
    name: str
    experiment: str
    server_address: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    credential: str = ""  # silos only
    silo_credentials: dict[str, str] | None = None  # server only: name -> sha256 of the credential
    task_sha256: str = ""

    @property
    def task_path(self) -> Path:
        return self.path / TASK


def credential_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` owner-only from the start (never world-readable, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"server address {address!r} is not HOST:PORT", "e.g. --server-address fl.example.org:7355")
    return host.strip("[]"), int(port)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(dumps(data, indent=2, sort_keys=True) + "\n")


def _write_party(folder: Path, kit: dict[str, Any], ca: Issued, party: Issued) -> None:
    folder.mkdir(mode=0o700)
    (folder / CA_CERT).write_bytes(ca.cert_pem)
    (folder / CERT).write_bytes(party.cert_pem)
    _write_private(folder / KEY, party.key_pem)
    _write_json(folder / KIT_FILE, kit)


@dataclass(frozen=True)
class ProvisionReport:
    out: Path
    server_address: str
    kits: tuple[Path, ...]
    expires: dt.datetime


def provision(
    config: ExperimentConfig, out: Path, server_address: str | None = None, days: int = DEFAULT_DAYS
) -> ProvisionReport:
    """A CA, a server kit and one kit per silo of ``config`` under ``out`` (which must not hold kits yet)."""
    out = Path(out)
    address = server_address or config.server.address
    host, _ = split_address(address)
    if (out / CA_DIR).exists() or (out / SERVER).exists():
        raise KitError(
            f"{out} already holds kits; provisioning again would replace every party's certificate",
            f"use `fedsilo provision --add-silo NAME --out {out}` to add a silo, or choose another --out",
        )
    out.mkdir(parents=True, exist_ok=True)
    ca = make_ca(config.name, days)
    (out / CA_DIR).mkdir(mode=0o700)
    (out / CA_DIR / CA_CERT).write_bytes(ca.cert_pem)
    _write_private(out / CA_DIR / CA_KEY, ca.key_pem)
    task_sha = file_sha256(config.task)
    credentials: dict[str, str] = {}
    kits = []
    for silo in config.silos:
        credentials[silo.name] = _silo_kit(out, silo.name, config, address, ca, days, task_sha)
        kits.append(out / silo.name)
    party = issue(ca, "fedsilo-server", config.name, host, days)
    server = {"role": SERVER, "name": SERVER, "experiment": config.name, "server_address": address}
    _write_party(out / SERVER, {**server, "task_sha256": task_sha, "silos": credentials}, ca, party)
    return ProvisionReport(out, address, (out / SERVER, *kits), not_after(ca.cert_pem))


def _silo_kit(
    out: Path,
    name: str,
    config: ExperimentConfig,
    address: str,
    ca: Issued,
    days: int,
    task_sha: str,
) -> str:
    """Write one silo's kit; returns the hash of its credential (for the server's kit)."""
    kit = {"role": "silo", "name": name, "experiment": config.name, "server_address": address, "task_sha256": task_sha}
    _write_party(out / name, kit, ca, issue(ca, name, config.name, None, days))
    credential = secrets.token_urlsafe(32)
    _write_private(out / name / CREDENTIAL, credential.encode())
    shutil.copyfile(config.task, out / name / TASK)
    return credential_hash(credential)


def add_silo(config: ExperimentConfig, out: Path, name: str, days: int = DEFAULT_DAYS) -> Path:
    """Issue a kit for one more silo with the existing CA, and record it in the server's kit."""
    out = Path(out)
    if not SILO_NAME.match(name) or name in (SERVER, CA_DIR):
        raise ConfigError(f"silo name {name!r} is not allowed", "use letters, digits, '_' or '-'")
    if (out / name).exists():
        raise KitError(f"a kit for silo '{name}' already exists in {out}", "pick another name or remove that folder")
    ca_key_path = out / CA_DIR / CA_KEY
    if not ca_key_path.is_file():
        raise KitError(f"{ca_key_path} not found", "--add-silo needs the folder made by `fedsilo provision`")
    ca = Issued(ca_key_path.read_bytes(), (out / CA_DIR / CA_CERT).read_bytes())
    server_kit_file = out / SERVER / KIT_FILE
    server_kit = json.loads(server_kit_file.read_text())
    task_sha = server_kit.get("task_sha256") or file_sha256(config.task)
    credential = _silo_kit(out, name, config, server_kit["server_address"], ca, days, task_sha)
    server_kit["silos"][name] = credential
    _write_json(server_kit_file, server_kit)
    return out / name


def load_kit(path: Path) -> Kit:
    """Read a kit folder, with a clear error for whatever is missing."""
    path = Path(path)
    kit_file = path / KIT_FILE
    if not kit_file.is_file():
        raise KitError(f"{path} is not a fedsilo kit (no {KIT_FILE})", "pass a folder made by `fedsilo provision`")
    try:
        meta = json.loads(kit_file.read_text())
        role = meta["role"]
        files = {n: (path / n).read_bytes() for n in (CA_CERT, CERT, KEY)}
        credential = (path / CREDENTIAL).read_text().strip() if role == "silo" else ""
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise KitError(f"kit {path} is incomplete or damaged: {exc}", "provision the kit again") from None
    return Kit(
        path=path,
        role=role,
        name=meta["name"],
        experiment=meta["experiment"],
        server_address=meta["server_address"],
        ca_pem=files[CA_CERT],
        cert_pem=files[CERT],
        key_pem=files[KEY],
        credential=credential,
        silo_credentials=dict(meta.get("silos", {})) if role == SERVER else None,
        task_sha256=meta.get("task_sha256", ""),
    )


def kit_certificate_problems(kit: Kit, now: dt.datetime | None = None) -> list[str]:
    """What would fail a kit's TLS handshake: its certificate's chain, validity, key and name."""
    now = now or dt.datetime.now(dt.timezone.utc)
    labels = (str(kit.path / CA_CERT), str(kit.path / CERT), str(kit.path / KEY))
    silo = kit.name if kit.role == "silo" else None
    return certificate_problems(kit.ca_pem, kit.cert_pem, kit.key_pem, labels, silo, now)


def kit_problems(kit: Kit, now: dt.datetime | None = None) -> list[str]:
    """Everything wrong with a kit: its certificate's chain, validity, key and name, and file permissions."""
    problems = kit_certificate_problems(kit, now)
    for private in (KEY, CREDENTIAL) if kit.role == "silo" else (KEY,):
        mode = (kit.path / private).stat().st_mode & 0o777
        if mode & 0o077:
            problems.append(f"{kit.path / private} is readable by others (mode {mode:o}) -> chmod 600 it")
    return problems


def expiry(kit: Kit) -> dt.datetime:
    return not_after(kit.cert_pem)


def silo_names(kits: Sequence[Path]) -> list[str]:
    return [Path(k).name for k in kits if Path(k).name not in (SERVER, CA_DIR)]
