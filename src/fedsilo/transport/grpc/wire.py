"""What both ends of the gRPC transport share: protocol constants, channel options, credentials.

Chunks are small (1 MiB) and gRPC's message limits are set just above them, so neither side
ever holds a message larger than a chunk: a model of several GB streams through in pieces, and a
misbehaving peer cannot make the other allocate more than the declared size of one transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

PROTOCOL = 2  # 2: typed, strictly parsed instructions (config_json)
CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = CHUNK_BYTES + 64 * 1024  # one chunk plus framing; larger messages are refused by gRPC
MAX_JSON_BYTES = 64 * 1024  # a config or metrics JSON larger than this is refused
MAX_STEP_BYTES = 256 * 1024**2 + 8  # a secure-aggregation message a silo downloads (the protocol's own header cap)
CREDENTIAL_KEY = "fedsilo-credential"
SILO_KEY = "fedsilo-silo"  # only read in --insecure mode, where there is no certificate to name the silo

_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
    *_KEEPALIVE,
]
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    *_KEEPALIVE,
]


@dataclass(frozen=True)
class Tls:
    """PEM bytes of this party's certificate and key, and of the experiment's CA."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def server_credentials(tls: Tls) -> grpc.ServerCredentials:
    """Only peers whose certificate the experiment's CA signed get past the handshake."""
    return grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)], root_certificates=tls.ca_pem, require_client_auth=True
    )


def channel_credentials(tls: Tls) -> grpc.ChannelCredentials:
    """The silo checks the server's certificate against the same CA and presents its own."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
    )


def chunks(data: memoryview, offset: int, size: int = CHUNK_BYTES) -> list[memoryview]:
    """``data`` from ``offset`` cut into views of at most ``size`` bytes (no copies)."""
    return [data[i : i + size] for i in range(offset, len(data), size)]
