"""The messages between the worker pool and its worker processes: one frozen dataclass per kind.

They go through local multiprocessing pipes between the server and the worker processes it
started itself on this machine, so they are pickled as multiprocessing does, and never cross a
trust boundary. They carry no parameters: the global model and the silos' updates are in shared
memory, and instructions travel as the same strict JSON a deployed silo parses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedsilo.wire.arrays import BufferLayout
from fedsilo.wire.messages import FailureKind

# --- server -> worker ------------------------------------------------------------------------


@dataclass(frozen=True)
class Attach:
    """Where the model's arrays live: sent once the server knows the model's layout."""

    layout: BufferLayout
    global_names: tuple[str, str]  # the two global-model buffers, used by calls in turn
    slot_names: tuple[str, str]  # this worker's two result slots, used by its fits in turn
    store_dir: str  # silos' top-k residuals and local-DP accountants (the run folder's), shared by all workers


@dataclass(frozen=True)
class FitJob:
    """Train ``silo`` from the global model in ``buffer``; write the update into result slot ``slot``."""

    silo: str
    folders: tuple[str, ...]
    buffer: int
    round: int
    instructions: str  # FitInstructions as JSON
    slot: int = 0  # chosen by the pool when it sends the job


@dataclass(frozen=True)
class EvaluateJob:
    """Evaluate the global model in ``buffer`` on ``silo``'s test data."""

    silo: str
    folders: tuple[str, ...]
    buffer: int
    round: int
    instructions: str  # EvaluateInstructions as JSON


@dataclass(frozen=True)
class ExchangeJob:
    """One protocol step of ``silo``'s session, which this worker holds since it trained the silo."""

    silo: str
    step: str
    payload: bytes


@dataclass(frozen=True)
class Stop:
    """Leave now."""


PoolJob = FitJob | EvaluateJob | ExchangeJob

# --- worker -> server ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The task is loaded and the model built: send :class:`Attach`."""


@dataclass(frozen=True)
class StartFailed:
    """The task could not be loaded here; the worker exits after sending this."""

    reason: str


@dataclass(frozen=True)
class FitDone:
    """A fit's outcome; the update is in the job's result slot, unless ``kept`` (secure aggregation)."""

    silo: str
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    kept: bool = False


@dataclass(frozen=True)
class EvaluateDone:
    silo: str
    loss: float
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Exchanged:
    """The session's answer to one protocol step (the protocol's own bytes)."""

    silo: str
    step: str
    payload: bytes


@dataclass(frozen=True)
class JobFailed:
    silo: str
    reason: str
    kind: FailureKind = "error"


PoolReply = FitDone | EvaluateDone | Exchanged | JobFailed
