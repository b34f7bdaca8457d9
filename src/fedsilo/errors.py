"""One exception tree for everything fedsilo reports to a user.

Each user-facing error carries a one-line message, a one-line fix and the exit code the CLI
returns, so the CLI can print exactly one readable line and never a traceback.
"""

from __future__ import annotations

import traceback


class FedsiloError(Exception):
    """Base of every error fedsilo raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def one_line(self) -> str:
        """The message and its fix as the single line the CLI prints."""
        return f"{self.message} -> {self.fix}" if self.fix else self.message


def describe(exc: BaseException) -> str:
    """One line naming an error and where in user code it happened (a fedsilo error: its one line)."""
    if isinstance(exc, FedsiloError):
        return exc.one_line()
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    message = " ".join(str(exc).split())  # one line, whatever the exception's text looks like
    return f"{type(exc).__name__}: {message}{where}"


class ConfigError(FedsiloError):
    """The experiment YAML or a command-line option is invalid."""

    exit_code = 2


class ParameterError(ConfigError, ValueError):
    """A constructor of fedsilo's Python API got a parameter out of its range (a ValueError too).

    What the YAML schema refuses with a message naming the key, the Python API refuses with this.
    """


class TaskError(FedsiloError):
    """The user's task module is missing, does not import, or lacks what fedsilo needs."""

    exit_code = 3


class DataError(FedsiloError):
    """A silo's or the server's data is missing, unreadable or empty."""

    exit_code = 4


class DatasetNotFound(DataError):
    """A named dataset file is in none of the searched data directories."""


class ChecksumMismatch(DataError):
    """A dataset file's bytes differ from the published checksum."""


class PlanError(FedsiloError):
    """The job graph cannot run: e.g. strategy minimums exceed the number of silos."""

    exit_code = 5


class UpdateRejected(FedsiloError):
    """A received update failed validation; the server turns this into a Failure."""

    exit_code = 6


class RoundFailed(FedsiloError):
    """Too few silos answered for a round to be aggregated."""

    exit_code = 7


class RunDirError(FedsiloError):
    """A run folder is missing, incomplete or would be overwritten."""

    exit_code = 8


class DiskFull(RunDirError):
    """A file could not be written for want of space: a full disk, a quota, or a file-size limit.

    What was written before stays whole (checkpoints and results are replaced atomically, and the
    metrics log is cut back to its last whole line), so a run continues with ``--resume`` once
    there is space again.
    """

    exit_code = 13


class KitError(FedsiloError):
    """A deployment kit (certificates, keys, credential) is missing, damaged or would be overwritten."""

    exit_code = 9


class ConnectionFailed(FedsiloError):
    """A silo could not reach the server, or the server refused it (wrong CA, name, credential)."""

    exit_code = 10


class SecAggError(FedsiloError):
    """A secure-aggregation round cannot complete (too few silos left, inconsistent messages).

    The round is abandoned as a whole: no partial sum is produced, so the global model is unchanged.
    """

    exit_code = 11


class ProtocolError(FedsiloError):
    """A message between the server and a silo is malformed: unknown keys, wrong types, another version.

    Both ends run fedsilo; a message that does not parse strictly is refused, never half-understood.
    """

    exit_code = 12


class RunEnded(ConnectionFailed):
    """The server ended the run because it failed: the silo says why and exits non-zero."""
