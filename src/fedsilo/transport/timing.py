"""How long the networked transport waits, and how much it lets a peer hold, each default stated once.

The YAML (``server:``), the CLI and both gRPC ends read these. A silo connects out and keeps trying
for ``CONNECT_TIMEOUT_S``; the server pings every connected silo every ``HEARTBEAT_S`` (a silo
gone for two pings is dropped from the round at once); a transfer making no progress for
``STALL_TIMEOUT_S`` is given up. A round waits for its deadline (``server.round_timeout_s``) and,
for an upload still arriving then, at most ``TRANSFER_GRACE_S`` longer, and only while that upload
has averaged ``MIN_UPLOAD_RATE`` bytes a second since it began (its first second free): a valid
silo cannot hold a round open by trickling bytes. Before anyone is known, a connection must send
its first byte within ``HANDSHAKE_TIMEOUT_S`` and finish its TLS handshake within as long again,
and one address may hold at most ``CONNECTIONS_PER_PEER`` connections. Once the run is over, a
silo whose task is still running (training cannot be interrupted in its thread) exits after
``EXIT_GRACE_S``.
"""

from dataclasses import dataclass

CONNECT_TIMEOUT_S = 120.0
HEARTBEAT_S = 5.0
STALL_TIMEOUT_S = 60.0
TRANSFER_GRACE_S = 600.0
MIN_UPLOAD_RATE = 32 * 1024  # bytes per second (256 kbit/s)
HANDSHAKE_TIMEOUT_S = 10.0
CONNECTIONS_PER_PEER = 16  # a silo needs one; a few more cover reconnects, `fedsilo doctor` and a NAT
EXIT_GRACE_S = 10.0


@dataclass(frozen=True)
class ServerLimits:
    """What the gRPC server allows its peers: the waits above, as one value."""

    heartbeat_s: float = HEARTBEAT_S
    stall_timeout_s: float = STALL_TIMEOUT_S
    transfer_grace_s: float = TRANSFER_GRACE_S
    min_upload_rate: float = MIN_UPLOAD_RATE
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S
    connections_per_peer: int = CONNECTIONS_PER_PEER

    @property
    def reconnect_s(self) -> float:
        """How long a silo whose session ended may take to come back before its round drops it."""
        return 2 * self.heartbeat_s + 1.0
