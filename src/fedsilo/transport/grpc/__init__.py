"""gRPC transport with mutual TLS: the only place fedsilo imports grpc or translates its errors.

``server.py`` is the orchestrator's side (a :class:`~fedsilo.transport.base.Transport` for the
server loop), ``silo.py`` the silo's side (it calls a silo endpoint), ``wire.py`` what both share.
"""
