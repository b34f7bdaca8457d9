"""The client interface every framework adapter implements, and local DP as a capability of a client.

A client holds one silo's model object and data between rounds; only parameters move. It does
not know whether it is simulated or deployed, nor which strategy the server runs. It trains with
the :class:`~fedsilo.wire.instructions.TrainSettings` the silo agent gives it (the server's
instructions, with the silo's own seed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from fedsilo.privacy.accounting import PrivacyAccountant
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import EvaluateInstructions, LocalDP, TrainSettings


class Client(Protocol):
    def get_parameters(self) -> ArrayDict:
        """The current local model, named arrays."""

    def fit(self, parameters: ArrayDict, settings: TrainSettings) -> tuple[ArrayDict, int, dict[str, float]]:
        """Train from ``parameters``; return new parameters, examples used, metrics."""

    def evaluate(
        self, parameters: ArrayDict, instructions: EvaluateInstructions
    ) -> tuple[float, int, dict[str, float]]:
        """Evaluate ``parameters`` on the local test data; return loss, examples, metrics."""


@dataclass(frozen=True, slots=True)
class PrivateFit:
    """One fit with local DP-SGD: the model, its examples, metrics (with ``epsilon``), the accountant to keep."""

    parameters: ArrayDict
    num_examples: int
    metrics: dict[str, float]
    accountant: PrivacyAccountant


@runtime_checkable
class TrainsPrivately(Protocol):
    """A client that can train with local DP-SGD (the PyTorch client, through Opacus).

    The accountant is the silo's own record of privacy spent so far: the agent keeps it in the
    silo store between rounds and hands it back in, so any process serving the silo continues it.
    """

    def fit_private(
        self, parameters: ArrayDict, settings: TrainSettings, dp: LocalDP, accountant: PrivacyAccountant
    ) -> PrivateFit: ...


def nbytes_of(*data: Any) -> int:
    """Bytes held by loaded data: arrays and tensors, alone or in tuples/lists (e.g. ``(x, y)``).

    What a worker counts against its data cache; data of another shape (a torch Dataset that
    reads lazily) counts as 0.
    """
    total = 0
    for item in data:
        if isinstance(item, tuple | list):
            total += nbytes_of(*item)
        elif isinstance(getattr(item, "nbytes", None), int):
            total += int(item.nbytes)
    return total


def silo_seed(seed: int, round: int, silo: str) -> int:
    """A stable per-silo, per-round seed (Python's ``hash`` is salted per process, so not that)."""
    digest = hashlib.blake2b(f"{seed}/{round}/{silo}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF
