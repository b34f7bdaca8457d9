"""What a silo keeps between rounds: its top-k residual and its local-DP accountant.

Both belong to the silo (the residual is what it has not sent yet; the accountant is its own
records' privacy spent so far), so they live next to the silo agent, not on the server. In a
deployment or a silo process one agent lives for the whole run and memory is enough. In
simulation a silo may run on a different worker each round, and a worker's cache of agents may
drop it, so the pool gives every worker the same folder: state written there by one worker is
read by whichever serves the silo next. Files are safetensors and JSON, never pickle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsilo.arrays import ArrayDict, load_file, save_file


class SiloStore:
    """Named arrays and JSON values per (silo, key): in memory, or in ``folder`` when given."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._arrays: dict[tuple[str, str], ArrayDict] = {}
        self._values: dict[tuple[str, str], Any] = {}

    def _path(self, silo: str, key: str, suffix: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{silo}.{key}{suffix}"  # silo names are checked to be file-name safe

    def arrays(self, silo: str, key: str) -> ArrayDict | None:
        if self.folder is None:
            return self._arrays.get((silo, key))
        path = self._path(silo, key, ".safetensors")
        return load_file(path) if path.exists() else None

    def put_arrays(self, silo: str, key: str, arrays: ArrayDict) -> None:
        if self.folder is None:
            self._arrays[(silo, key)] = arrays
        else:
            save_file(arrays, self._path(silo, key, ".safetensors"))

    def value(self, silo: str, key: str) -> Any:
        if self.folder is None:
            return self._values.get((silo, key))
        path = self._path(silo, key, ".json")
        return json.loads(path.read_text()) if path.exists() else None

    def put_value(self, silo: str, key: str, value: Any) -> None:
        if self.folder is None:
            self._values[(silo, key)] = value
            return
        path = self._path(silo, key, ".json")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)
