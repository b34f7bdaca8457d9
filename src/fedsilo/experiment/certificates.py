"""X.509 for a deployment's kits: a certificate authority per experiment, and one certificate per party.

PEM bytes in, PEM bytes out: the kits (:mod:`fedsilo.experiment.provision`) never touch
``cryptography`` themselves. Keys are ECDSA P-256; certificates are signed with SHA-256, valid from
five minutes ago (clock skew) for ``days``, never beyond the CA. A server certificate names its
host (and localhost) and is for server authentication; a silo's names the silo as its common name
(its identity: it cannot act as another) and is for client authentication.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A private key and its certificate, as PEM."""

    key_pem: bytes
    cert_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


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


def make_ca(experiment: str, days: int) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
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
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


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


def issue(ca: Issued, common_name: str, experiment: str, server_host: str | None, days: int) -> Issued:
    """A certificate for one party, signed by ``ca``: the server (``server_host`` given) or a silo."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
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
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def not_after(cert_pem: bytes) -> dt.datetime:
    """When a certificate expires (UTC)."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def certificate_problems(
    ca_pem: bytes, cert_pem: bytes, key_pem: bytes, labels: tuple[str, str, str], silo: str | None, now: dt.datetime
) -> list[str]:
    """What is wrong with a certificate: not signed by the CA, not valid now, another key, another silo.

    ``labels`` name the CA certificate, the certificate and the key in the messages (their files).
    """
    ca_label, cert_label, key_label = labels
    problems = []
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:  # InvalidSignature has no message; ValueError/TypeError for other issuers
        problems.append(f"{cert_label} is not signed by {ca_label} ({type(exc).__name__})")
    for label, c in (("CA certificate", ca), ("certificate", cert)):
        if now < c.not_valid_before_utc:
            problems.append(f"the {label} is valid only from {c.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
        if now > c.not_valid_after_utc:
            problems.append(f"the {label} expired on {c.not_valid_after_utc:%Y-%m-%d} -> provision a new kit")
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    key = serialization.load_pem_private_key(key_pem, password=None)
    if key.public_key().public_bytes(*public) != cert.public_key().public_bytes(*public):
        problems.append(f"{key_label} does not belong to {cert_label}")
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if silo is not None and (not common_name or common_name[0].value != silo):
        problems.append(f"the certificate is not issued to silo '{silo}'")
    return problems
