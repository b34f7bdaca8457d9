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

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.data import partition
from fedsilo.data.catalogue import DATASETS
from fedsilo.data.datasets import digests, find_dataset, load_arrays
from fedsilo.data.site_split import split_by_column
from fedsilo.data.split_io import SplitReport, commit_split, existing_split
from fedsilo.data.split_io import save_npz as _save_npz
from fedsilo.errors import ConfigError, DataError

__all__ = ["METHODS", "SplitReport", "format_report", "split_dataset"]

METHODS = ("iid", "dirichlet", "group", "column")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _check_args(
    silos: Sequence[str],
    method: str,
    test_fraction: float,
    groups_key: str | None,
    column: str | None,
    label_column: str | None,
) -> None:
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
    if method == "column":
        if not (column and label_column):
            raise ConfigError(
                "method 'column' needs the column naming each row's silo and the label column",
                fix="pass both, e.g. --column dataset --label-column dx",
            )
    elif (method == "group") != (groups_key is not None):
        raise ConfigError(
            "method 'group' needs a groups key, and a groups key needs method 'group' or 'column'",
            fix="pass both, e.g. method='group' with groups_key='patient'",
        )
    if method != "column" and (column or label_column):
        raise ConfigError("a silo column and a label column need method 'column'", fix="pass --method column")


def _resolve(source: str | Path, data_dirs: Sequence[Path] | None, download: bool, tables: bool = False) -> Path:
    """The file of a known dataset or a path; with ``tables``, also an image release folder."""
    if isinstance(source, str) and source in DATASETS:
        return find_dataset(source, data_dirs=data_dirs, download=download)
    if Path(source).is_file() or (tables and Path(source).is_dir()):
        return Path(source)
    kinds = "a .csv table or an image release folder" if tables else "an .npz file"
    raise ConfigError(
        f"source {str(source)!r} is neither a known dataset nor an existing {'file or folder' if tables else 'file'}",
        fix=f"use one of {', '.join(sorted(DATASETS))} or a path to {kinds}",
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
        raise DataError(
            f"{path}: train_{key} has {len(groups)} entries, train has {n}",
            f"give train_{key} one group id per training example",
        )
    return groups


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
    column: str | None = None,
    label_column: str | None = None,
    image_size: int = 28,
) -> SplitReport:
    """Partition the ``train`` split of ``source`` across ``silos`` and write their folders.

    Method ``column`` instead puts each row of a table (or image release, see
    :mod:`fedsilo.data.site_split`) in the silo its ``column`` names.
    """
    silos = list(silos)
    _check_args(silos, method, test_fraction, groups_key, column, label_column)
    out = Path(out)
    path = _resolve(source, data_dirs, download, tables=method == "column")
    if method == "column":
        assert column is not None and label_column is not None
        return split_by_column(
            path, out, silos, column, label_column, groups_key, test_fraction, seed, force, image_size
        )
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
    found = existing_split(out, params, force)
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

    def write(folder: Path) -> None:
        for name, (train, test) in cuts.items():
            (folder / name).mkdir()
            _save_npz(folder / name / "train.npz", {"x": x[train], "y": y[train]})
            _save_npz(folder / name / "test.npz", {"x": x[test], "y": y[test]})
        (folder / "server").mkdir()
        _save_npz(folder / "server" / "test.npz", {"x": server_x, "y": server_y})

    commit_split(report, write)
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
