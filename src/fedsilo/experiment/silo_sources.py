"""Many silos in one line of YAML: ``silos: {from_split: DIR}`` or ``silos: {folders: PATTERN}``.

Writing 10,000 ``{name, data}`` entries by hand is not what a user should do. The compact forms
expand, before validation, into the same list of silos a hand-written ``silos:`` gives, so
everything downstream (plan, runtimes, resume from ``config.json``) sees one shape:

- ``from_split: data/many``: every silo that ``data/many/split.json`` lists (as written by
  ``fedsilo data split``), in its order, with data folder ``data/many/<name>``.
- ``folders: "data/many/*"``: every folder the glob pattern matches, sorted, named by the folder
  (a folder named ``server``, the split's central test set, is left out).

Only names and paths are read here (one JSON file or one directory listing): no silo's data is
opened, so declaring 10,000 silos costs a list of 10,000 paths.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError

KEYS = ("from_split", "folders")
SERVER_FOLDER = "server"
FIX = "use `silos: {from_split: DIR}` (a folder `fedsilo data split` wrote) or `silos: {folders: 'DIR/*'}`"


def expand_silos(spec: Any, base: Path) -> list[dict[str, str]]:
    """The ``{name, data}`` entries a compact ``silos:`` mapping stands for (paths absolute)."""
    if not isinstance(spec, dict):
        raise ConfigError("silos: expected a list of {name, data} or a mapping", FIX)
    unknown = sorted(str(k) for k in spec if k not in KEYS)
    given = [k for k in KEYS if k in spec]
    if unknown or len(given) != 1:
        what = f"unknown key(s) {', '.join(unknown)}" if unknown else f"{len(given)} of {', '.join(KEYS)} given"
        raise ConfigError(f"silos: {what}; give exactly one of {', '.join(KEYS)}", FIX)
    key = given[0]
    value = spec[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"silos.{key}: expected a path, got {value!r}", FIX)
    if key == "from_split":
        return _from_split((base / value).resolve())
    return _from_glob(value if Path(value).is_absolute() else str(base / value), value)


def _from_split(folder: Path) -> list[dict[str, str]]:
    manifest = folder / "split.json"
    make = f"run `fedsilo data split DATASET --out {folder} ...` first, or point from_split at the folder it wrote"
    if not manifest.is_file():
        raise ConfigError(f"silos.from_split: {manifest} does not exist", make)
    try:
        listed = json.loads(manifest.read_text())["silos"]
        names = [str(s["name"]) for s in listed]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"silos.from_split: {manifest} lists no silos ({type(exc).__name__}: {exc})", make) from None
    if not names:
        raise ConfigError(f"silos.from_split: {manifest} lists no silos", make)
    return [{"name": n, "data": str(folder / n)} for n in names]


def _from_glob(pattern: str, as_written: str) -> list[dict[str, str]]:
    found = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
    silos = [{"name": p.name, "data": str(p.resolve())} for p in found if p.name != SERVER_FOLDER]
    if not silos:
        raise ConfigError(
            f"silos.folders: no folder matches {as_written!r} (looked for {pattern})",
            "fix the pattern (relative to the experiment YAML), e.g. 'data/many/*'",
        )
    return silos
