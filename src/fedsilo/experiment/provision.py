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
import ipaddress
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsilo.errors import ConfigError, KitError
from fedsilo.experiment.config import SILO_NAME, ExperimentConfig

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


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, experiment: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"fedsilo experiment {experiment}"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)  # a little slack for clock skew


def make_ca(experiment: str, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    start, end = _validity(days)
    name = _name(f"fedsilo CA {experiment}", experiment)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _host_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(host)
        if str(ip) != "127.0.0.1":
            names.append(x509.IPAddress(ip))
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    return names


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    experiment: str,
    server_host: str | None,
    days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for one party: the server (``server_host`` given) or a silo (its name as CN)."""
    key = _new_key()
    start, end = _validity(days)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_host is not None else ExtendedKeyUsageOID.CLIENT_AUTH
    san = _host_names(server_host) if server_host is not None else [x509.DNSName(common_name)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, experiment))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(end, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"server address {address!r} is not HOST:PORT", "e.g. --server-address fl.example.org:7355")
    return host.strip("[]"), int(port)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_party(folder: Path, kit: dict[str, Any], ca_cert: x509.Certificate, key: Any, cert: Any) -> None:
    folder.mkdir(mode=0o700)
    (folder / CA_CERT).write_bytes(_cert_pem(ca_cert))
    (folder / CERT).write_bytes(_cert_pem(cert))
    _write_private(folder / KEY, _key_pem(key))
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
    ca_key, ca_cert = make_ca(config.name, days)
    (out / CA_DIR).mkdir(mode=0o700)
    (out / CA_DIR / CA_CERT).write_bytes(_cert_pem(ca_cert))
    _write_private(out / CA_DIR / CA_KEY, _key_pem(ca_key))
    task_sha = file_sha256(config.task)
    credentials: dict[str, str] = {}
    kits = []
    for silo in config.silos:
        credentials[silo.name] = _silo_kit(out, silo.name, config, address, ca_key, ca_cert, days, task_sha)
        kits.append(out / silo.name)
    key, cert = issue(ca_key, ca_cert, "fedsilo-server", config.name, host, days)
    server = {"role": SERVER, "name": SERVER, "experiment": config.name, "server_address": address}
    _write_party(out / SERVER, {**server, "task_sha256": task_sha, "silos": credentials}, ca_cert, key, cert)
    return ProvisionReport(out, address, (out / SERVER, *kits), ca_cert.not_valid_after_utc)


def _silo_kit(
    out: Path,
    name: str,
    config: ExperimentConfig,
    address: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    days: int,
    task_sha: str,
) -> str:
    """Write one silo's kit; returns the hash of its credential (for the server's kit)."""
    key, cert = issue(ca_key, ca_cert, name, config.name, None, days)
    kit = {"role": "silo", "name": name, "experiment": config.name, "server_address": address, "task_sha256": task_sha}
    _write_party(out / name, kit, ca_cert, key, cert)
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
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((out / CA_DIR / CA_CERT).read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    server_kit_file = out / SERVER / KIT_FILE
    server_kit = json.loads(server_kit_file.read_text())
    task_sha = server_kit.get("task_sha256") or file_sha256(config.task)
    credential = _silo_kit(out, name, config, server_kit["server_address"], ca_key, ca_cert, days, task_sha)
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


def kit_problems(kit: Kit, now: dt.datetime | None = None) -> list[str]:
    """Everything wrong with a kit's certificates: chain, validity dates, key pairing, permissions."""
    now = now or dt.datetime.now(dt.timezone.utc)
    problems = []
    ca = x509.load_pem_x509_certificate(kit.ca_pem)
    cert = x509.load_pem_x509_certificate(kit.cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no message
        problems.append(f"{kit.path / CERT} is not signed by {kit.path / CA_CERT} ({type(exc).__name__})")
    for label, c in (("CA certificate", ca), ("certificate", cert)):
        if now < c.not_valid_before_utc:
            problems.append(f"the {label} is valid only from {c.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
        if now > c.not_valid_after_utc:
            problems.append(f"the {label} expired on {c.not_valid_after_utc:%Y-%m-%d} -> provision a new kit")
    key = serialization.load_pem_private_key(kit.key_pem, password=None)
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        problems.append(f"{kit.path / KEY} does not belong to {kit.path / CERT}")
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if kit.role == "silo" and (not common_name or common_name[0].value != kit.name):
        problems.append(f"the certificate is not issued to silo '{kit.name}'")
    for private in (KEY, CREDENTIAL) if kit.role == "silo" else (KEY,):
        mode = (kit.path / private).stat().st_mode & 0o777
        if mode & 0o077:
            problems.append(f"{kit.path / private} is readable by others (mode {mode:o}) -> chmod 600 it")
    return problems


def expiry(kit: Kit) -> dt.datetime:
    return x509.load_pem_x509_certificate(kit.cert_pem).not_valid_after_utc


def silo_names(kits: Sequence[Path]) -> list[str]:
    return [Path(k).name for k in kits if Path(k).name not in (SERVER, CA_DIR)]
