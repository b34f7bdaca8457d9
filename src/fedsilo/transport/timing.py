"""How long the networked transport waits, each default stated once (the YAML and the CLI read them).

A silo connects out and keeps trying for ``CONNECT_TIMEOUT_S``; the server pings every connected
silo every ``HEARTBEAT_S`` (a silo gone for two pings is dropped from the round at once); a
transfer is given up only after ``STALL_TIMEOUT_S`` without progress, never for being slow.
"""

CONNECT_TIMEOUT_S = 120.0
HEARTBEAT_S = 5.0
STALL_TIMEOUT_S = 60.0
