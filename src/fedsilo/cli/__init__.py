"""The ``fedsilo`` command (typer): any fedsilo error becomes one line and an exit code.

``app`` runs and checks experiments and prepares data; ``deploy`` holds provision, server, silo
and doctor; ``io`` the consoles and the one-line error handling every command shares.
"""

from fedsilo.cli.app import app, main

__all__ = ["app", "main"]
