"""What a silo keeps between rounds (its top-k residual, its local-DP accountant), per round written.

Both belong to the silo (the residual is what it has not sent yet; the accountant is its own
records' privacy spent so far), so they live in the silo wing, never on the server. Each value is
stored with the round that wrote it, and a round reads the newest value written *before* it. A
checkpoint of round ``r`` therefore matches the silos' state as of round ``r``: a run resumed from it
re-runs round ``r + 1`` from exactly that state, even if the interrupted run had already written
round ``r + 1``'s values (which the resumed round overwrites). Two versions are kept per value: the
one just written and the newest before it.

Where the folder is: the run folder's ``silo_store/`` in simulation (every worker process reads
and writes it, since a silo may run on a different worker each round) and beside a deployed silo's
kit (``KIT/state/``). Values are kept under the run's name, so a new run starts afresh. Files are
safetensors and JSON, never pickle; without a folder (tests) they live in memory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fedsilo.wire.arrays import ArrayDict, load_file, save_file
from fedsilo.wire.files import dumps, write_atomic

_VERSION = re.compile(r"\.r(\d+)\.(safetensors|json)$")
ARRAYS, VALUE = "safetensors", "json"


class SiloStore:
    """Named arrays and JSON values per (silo, key, round): in ``folder``/``run``, or in memory."""

    def __init__(self, folder: Path | None = None, run: str = "") -> None:
        self.folder = Path(folder) if folder is not None else None
        self.run = run
        self._memory: dict[tuple[str, str, str], dict[int, Any]] = {}

    def scoped(self, run: str) -> SiloStore:
        """The same store for the run named ``run`` (values of other runs are not seen)."""
        if run == self.run:
            return self
        scoped = SiloStore(self.folder, run)
        scoped._memory = self._memory
        return scoped

    def arrays(self, silo: str, key: str, before_round: int) -> ArrayDict | None:
        found = self._latest(silo, key, ARRAYS, before_round)
        if found is None or self.folder is None:
            return found
        return load_file(found)

    def put_arrays(self, silo: str, key: str, round: int, arrays: ArrayDict) -> None:
        if self.folder is None:
            self._remember(silo, key, ARRAYS, round, arrays)
            return
        save_file(arrays, self._path(silo, key, round, ARRAYS))
        self._prune(silo, key, ARRAYS, round)

    def value(self, silo: str, key: str, before_round: int) -> Any:
        found = self._latest(silo, key, VALUE, before_round)
        if found is None or self.folder is None:
            return found
        return json.loads(Path(found).read_text())

    def put_value(self, silo: str, key: str, round: int, value: Any) -> None:
        if self.folder is None:
            self._remember(silo, key, VALUE, round, value)
            return
        path = self._path(silo, key, round, VALUE)
        write_atomic(path, dumps(value))
        self._prune(silo, key, VALUE, round)

    # --- layout -------------------------------------------------------------------------------

    def _dir(self) -> Path:
        assert self.folder is not None
        folder = self.folder / self.run if self.run else self.folder
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _path(self, silo: str, key: str, round: int, kind: str) -> Path:
        return self._dir() / f"{silo}.{key}.r{round:06d}.{kind}"  # names are checked to be file-name safe

    def _versions(self, silo: str, key: str, kind: str) -> dict[int, Any]:
        if self.folder is None:
            return self._memory.get((self.run, f"{silo}.{key}", kind), {})
        found = {}
        for path in self._dir().glob(f"{silo}.{key}.r*.{kind}"):
            match = _VERSION.search(path.name)
            if match and path.name == f"{silo}.{key}.r{match.group(1)}.{kind}":
                found[int(match.group(1))] = path
        return found

    def _latest(self, silo: str, key: str, kind: str, before_round: int) -> Any:
        versions = self._versions(silo, key, kind)
        older = [r for r in versions if r < before_round]
        return versions[max(older)] if older else None

    def _remember(self, silo: str, key: str, kind: str, round: int, value: Any) -> None:
        versions = self._memory.setdefault((self.run, f"{silo}.{key}", kind), {})
        versions[round] = value
        for old in _stale(versions, round):
            del versions[old]

    def _prune(self, silo: str, key: str, kind: str, round: int) -> None:
        versions = self._versions(silo, key, kind)
        for old in _stale(versions, round):
            Path(versions[old]).unlink(missing_ok=True)


def _stale(versions: dict[int, Any], written: int) -> list[int]:
    """Versions to drop once ``written`` is stored: all but it and the newest before it."""
    older = sorted(r for r in versions if r < written)
    return older[:-1] + [r for r in versions if r > written]
