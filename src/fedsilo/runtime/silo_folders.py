"""The silos a simulated pool serves (the local worker pool, Ray) and the data folder of each.

The centralized baseline trains on a pseudo-silo, :data:`POOLED`, that holds every silo's folders:
only a simulation can have it, so it lives here and never in a round's sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from fedsilo.errors import FedsiloError

POOLED = "__pooled__"  # pseudo-silo holding every silo's data: the centralized baseline


class SiloFolders:
    """The silos a simulated pool serves (the local pool, Ray) and their data folders, :data:`POOLED` included."""

    def __init__(self, silos: Mapping[str, Sequence[Path]]) -> None:
        self._silos = {k: tuple(str(p) for p in v) for k, v in silos.items()}

    def available(self) -> list[str]:
        return [s for s in self._silos if s != POOLED]

    def add_pooled_silo(self) -> str:
        """Register the pseudo-silo with every silo's data, for the centralized baseline."""
        self._silos[POOLED] = tuple(p for k, v in self._silos.items() if k != POOLED for p in v)
        return POOLED

    def folders_of(self, silos: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Each of ``silos``' folders; a silo this pool does not serve is an error."""
        unknown = [s for s in silos if s not in self._silos]
        if unknown:
            raise FedsiloError(
                f"unknown silos {unknown}", "ask only for silos the transport lists as available (or the baselines')"
            )
        return {s: self._silos[s] for s in silos}
