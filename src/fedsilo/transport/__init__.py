"""How the server reaches silos: in-process calls, a local worker pool, or gRPC."""
