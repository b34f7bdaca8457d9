"""``fedsilo data split``: cut one dataset into per-silo folders plus a server test set.

Layout written under ``out``::

    <silo>/train.npz, <silo>/test.npz   arrays x (dtype kept) and y (int64), one folder per silo
    server/test.npz                     the dataset's test split, for server-side evaluation
    split.json                          the parameters, the source's sha256 and the counts

The split is deterministic (same arguments and seed give byte-identical files), idempotent (a
second identical call changes nothing) and never half-written: files go to a temp folder that
is renamed into place, and an existing split with other parameters is only replaced on ``force``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.data import partition
from fedsilo.data.datasets import DATASETS, digests, find_dataset, load_arrays
from fedsilo.errors import ConfigError, DataError

METHODS = ("iid", "dirichlet", "group")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class SplitReport:
    """What a split produced; ``params`` is what makes two splits the same split."""

    out: Path
    method: str
    seed: int
    silos: list[dict[str, Any]]
    server_test: int
    source: str
    source_sha256: str
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    already_existed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _check_args(silos: Sequence[str], method: str, test_fraction: float, groups_key: str | None) -> None:
    if not silos:
        raise ConfigError("no silos given", fix="name at least one silo")
    for name in silos:
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name == "server":
            raise ConfigError(
                f"invalid silo name {name!r}",
                fix="use letters, digits, '_' and '-' only, and not the reserved name 'server'",
            )
    if len(set(silos)) != len(silos):
        raise ConfigError(f"silo names repeat: {list(silos)}", fix="give each silo its own name")
    if method not in METHODS:
        raise ConfigError(f"unknown split method {method!r}", fix=f"use one of {METHODS}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}", fix="e.g. 0.2")
    if (method == "group") != (groups_key is not None):
        raise ConfigError(
            "method 'group' needs a groups key, and a groups key needs method 'group'",
            fix="pass both, e.g. method='group' with groups_key='patient'",
        )


def _resolve(source: str | Path, data_dirs: Sequence[Path] | None, download: bool) -> Path:
    if isinstance(source, str) and source in DATASETS:
        return find_dataset(source, data_dirs=data_dirs, download=download)
    if Path(source).is_file():
        return Path(source)
    raise ConfigError(
        f"source {str(source)!r} is neither a known dataset nor an existing .npz file",
        fix=f"use one of {', '.join(sorted(DATASETS))} or a path to an .npz file",
    )


def _read_groups(path: Path, key: str, n: int) -> np.ndarray:
    with np.load(path, allow_pickle=False) as npz:
        if f"train_{key}" not in npz.files:
            raise ConfigError(
                f"{path} has no per-sample group ids 'train_{key}'",
                fix=f"pick a groups key from the available keys: {', '.join(npz.files)}",
            )
        groups = npz[f"train_{key}"].reshape(-1)
    if len(groups) != n:
        raise DataError(f"{path}: train_{key} has {len(groups)} entries, train has {n}")
    return groups


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but with fixed zip timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def _existing(out: Path, params: dict[str, Any], force: bool) -> SplitReport | None:
    """The report already at ``out`` if it is this very split; an error if replacing would
    lose something the caller did not ask to replace."""
    if not out.exists() or force:
        return None
    if not out.is_dir():
        raise DataError(f"{out} exists and is not a folder", fix="choose another output folder")
    manifest = out / "split.json"
    if manifest.is_file():
        try:
            saved = json.loads(manifest.read_text())
            report = SplitReport(**{**saved, "out": out, "already_existed": True})
        except (ValueError, TypeError) as exc:
            raise DataError(f"{manifest} is unreadable: {exc}", fix="pass --force") from exc
        if report.params == params:
            return report
        raise DataError(
            f"{out} already holds a split made with other parameters or data",
            fix="choose another output folder, or pass --force to rewrite it",
        )
    if any(out.iterdir()):
        raise DataError(
            f"{out} is not empty and holds no split.json",
            fix="choose an empty output folder, or pass --force to replace its contents",
        )
    return None


def _scratch_dir(out: Path, kind: str) -> Path:
    """A fresh hidden folder beside ``out`` (same filesystem, so renames are atomic); unlike
    ``mkdtemp`` it honours the umask, so the final folder gets normal permissions."""
    path = out.parent / f".{out.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def _move_into_place(tmp: Path, out: Path) -> None:
    """Swap ``tmp`` in as ``out``; the old ``out`` is removed only once the new one is there."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _scratch_dir(out, "old")
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / out.name, out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _partition(
    method: str,
    n_silos: int,
    y: np.ndarray,
    groups: np.ndarray | None,
    alpha: float,
    sizes: Sequence[float] | None,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    if method == "iid":
        return partition.iid(len(y), n_silos, rng, sizes)
    if method == "dirichlet":
        return partition.dirichlet(y, n_silos, alpha, rng, sizes, min_per_silo=2)
    assert groups is not None
    return partition.by_group(groups, n_silos, rng, sizes)


def split_dataset(
    source: str | Path,
    out: Path,
    silos: Sequence[str],
    method: str = "iid",
    alpha: float = 0.5,
    sizes: Sequence[float] | None = None,
    groups_key: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    force: bool = False,
    data_dirs: Sequence[Path] | None = None,
    download: bool = False,
) -> SplitReport:
    """Partition the ``train`` split of ``source`` across ``silos`` and write their folders."""
    silos = list(silos)
    _check_args(silos, method, test_fraction, groups_key)
    out = Path(out)
    path = _resolve(source, data_dirs, download)
    params: dict[str, Any] = {
        "silos": silos,
        "method": method,
        "alpha": float(alpha),
        "sizes": None if sizes is None else [float(s) for s in sizes],
        "groups_key": groups_key,
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "source_sha256": digests(path)[1],
    }
    found = _existing(out, params, force)
    if found is not None:
        return found

    arrays = load_arrays(path)
    if "train" not in arrays:
        raise DataError(f"{path} has no train split", fix="use a dataset with a train split")
    x, y = arrays["train"]
    groups = _read_groups(path, groups_key, len(y)) if groups_key else None
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    pool = np.arange(len(y), dtype=np.int64)
    try:
        if "test" in arrays:
            server_x, server_y = arrays["test"]
        else:
            pool, server_idx = partition.holdout(pool, test_fraction, rng, y, groups)
            server_x, server_y = x[server_idx], y[server_idx]
            notes.append(f"no test split: server test set is {test_fraction:g} of train")
        sub_groups = None if groups is None else groups[pool]
        parts = _partition(method, len(silos), y[pool], sub_groups, alpha, sizes, rng)
        cuts = {
            name: partition.holdout(pool[part], test_fraction, rng, y, groups)
            for name, part in zip(silos, parts, strict=True)
        }
    except ValueError as exc:
        raise ConfigError(f"cannot split {path.name}: {exc}", fix="adjust the split options") from exc

    classes = np.unique(y)
    report = SplitReport(
        out=out,
        method=method,
        seed=int(seed),
        silos=[
            {
                "name": name,
                "train": len(train),
                "test": len(test),
                "train_class_counts": {str(c): int(np.sum(y[train] == c)) for c in classes},
            }
            for name, (train, test) in cuts.items()
        ],
        server_test=len(server_y),
        source=str(path.resolve()),
        source_sha256=params["source_sha256"],
        params=params,
        notes=notes,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch_dir(out, "tmp")
    try:
        for name, (train, test) in cuts.items():
            (tmp / name).mkdir()
            _save_npz(tmp / name / "train.npz", {"x": x[train], "y": y[train]})
            _save_npz(tmp / name / "test.npz", {"x": x[test], "y": y[test]})
        (tmp / "server").mkdir()
        _save_npz(tmp / "server" / "test.npz", {"x": server_x, "y": server_y})
        saved = {k: v for k, v in report.to_dict().items() if k not in ("out", "already_existed")}
        (tmp / "split.json").write_text(json.dumps(saved, indent=2) + "\n")
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def format_report(report: SplitReport) -> list[list[str]]:
    """Rows for a table: a header, one row per silo, the server test set, and totals."""
    classes = list(report.silos[0]["train_class_counts"]) if report.silos else []
    rows = [["silo", "train", "test", *(f"class {c}" for c in classes)]]
    for silo in report.silos:
        counts = [str(silo["train_class_counts"][c]) for c in classes]
        rows.append([silo["name"], str(silo["train"]), str(silo["test"]), *counts])
    rows.append(["server", "-", str(report.server_test), *("-" for _ in classes)])
    totals = [str(sum(s["train_class_counts"][c] for s in report.silos)) for c in classes]
    rows.append(
        [
            "total (silos)",
            str(sum(s["train"] for s in report.silos)),
            str(sum(s["test"] for s in report.silos)),
            *totals,
        ]
    )
    return rows
