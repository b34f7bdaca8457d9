"""Why a silo cannot get a session, in words: gRPC only says "Socket closed" or names an OpenSSL error.

When the connection fails at the handshake, one plain TLS probe (the standard library's, no
certificate of ours) tells whether the server speaks TLS at all: a silo started with
``--insecure`` against a TLS server, or with TLS against an ``--insecure`` one, is told so. A
handshake that fails otherwise points at the certificates (expired, another experiment's CA),
which the silo's own check of its kit names when it can.
"""

from __future__ import annotations

import socket
import ssl

from fedsilo.transport.grpc.wire import Tls

HANDSHAKE_SIGNS = ("socket closed", "handshake", "ssl", "certificate", "tsi_", "connection reset", "end of file")


def speaks_tls(address: str, timeout: float = 3.0) -> bool | None:
    """Whether the server at ``HOST:PORT`` answers a TLS hello with TLS (None: cannot tell)."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only asking whether it speaks TLS, not whom to trust
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw),
        ):
            return True
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc).upper()
        if "ALERT" in reason:  # it spoke TLS, and refused us for having no certificate
            return True
        return False if "WRONG_VERSION" in reason or "RECORD" in reason or "PACKET" in reason else None
    except (OSError, ValueError):
        return None


def hint(address: str, tls: Tls | None, last_error: str) -> str:
    """What most likely went wrong at the handshake, as a clause for the silo's message ('' if not that)."""
    if not any(sign in last_error.lower() for sign in HANDSHAKE_SIGNS):
        return ""  # refused, unreachable, no route: not a handshake problem
    speaks = speaks_tls(address)
    if tls is None and speaks:
        return "the server speaks TLS and this silo runs with --insecure: start the silo without --insecure"
    if tls is not None and speaks is False:
        return (
            "the server does not speak TLS (it runs with --insecure?): start both with TLS, "
            "or both with --insecure to debug on one machine"
        )
    if tls is not None:
        return "the TLS handshake failed: an expired certificate, or one from another experiment's CA?"
    return ""
