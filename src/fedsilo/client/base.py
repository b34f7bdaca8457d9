"""The client interface every framework adapter implements, and the settings it trains with.

A client holds one silo's model object and data between rounds; only parameters move. It does
not know whether it is simulated or deployed, nor which strategy the server runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fedsilo.arrays import ArrayDict
from fedsilo.messages import Config


class Client(Protocol):
    def get_parameters(self) -> ArrayDict:
        """The current local model, named arrays."""

    def fit(self, parameters: ArrayDict, config: Config) -> tuple[ArrayDict, int, dict[str, float]]:
        """Train from ``parameters``; return new parameters, examples used, metrics."""

    def evaluate(self, parameters: ArrayDict, config: Config) -> tuple[float, int, dict[str, float]]:
        """Evaluate ``parameters`` on the local test data; return loss, examples, metrics."""


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """Local training settings, read from a fit's config (defaults live in the experiment schema)."""

    epochs: int = 1
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    device: str = "auto"
    seed: int = 0
    proximal_mu: float = 0.0
    lr_decay: float = 1.0
    round: int = 1
    epochs_per_round: int = 0

    def lr_at(self, epoch: int) -> float:
        """Learning rate for local ``epoch`` (0-based): ``lr * lr_decay ** (round - 1)``.

        A baseline that trains all rounds' epochs in one go passes ``epochs_per_round`` so the
        rate steps down every ``epochs_per_round`` epochs, as it would have across rounds.
        """
        per_round = self.epochs_per_round or self.epochs
        return self.lr * self.lr_decay ** (self.round - 1 + epoch // per_round)

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> TrainSettings:
        known = {k: config[k] for k in cls.__dataclass_fields__ if k in config}
        return cls(**known)  # type: ignore[arg-type]


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
