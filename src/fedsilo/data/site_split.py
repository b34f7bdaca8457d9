"""Natural silos: split a metadata table (or an image release) by the site column of each row.

For data that already comes from several sites (HAM10000's ``dataset`` column names the four
collections its images came from) the silos are the sites themselves: nothing is drawn at random
except each site's held-out part. Layout written under ``out``::

    <silo>/train.csv, <silo>/test.csv   the site's rows of the table, header kept, file order kept
    <silo>/train.npz, <silo>/test.npz   (image release only) x (N, S, S, 3) uint8 and y int64,
                                        row for row the same as the CSV; y indexes ``classes``
    server/test.csv (and .npz)          the union of the sites' held-out rows, in file order
    split.json                          parameters, the table's sha256, classes, counts

With ``groups_key`` (HAM10000: ``lesion_id``) a group never spans two silos (it goes to the
site holding most of its rows) nor train and test. The server's test set is the union of the
silos' held-out groups: no group in it was trained on anywhere, and scores on it weigh each site
by its size, which is the one "overall" figure that the federated model, every local-only model
and the centralized model can all be compared on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.data import ham10000, partition
from fedsilo.data.datasets import digests
from fedsilo.data.split_io import SplitReport, commit_split, existing_split, save_csv, save_npz
from fedsilo.data.tables import Table, read_table
from fedsilo.errors import ConfigError


def _counts(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    return {c: int(np.sum(labels == c)) for c in classes}


def _notes(table: Table, column: str, silos: Sequence[str], parts: Sequence[np.ndarray]) -> list[str]:
    values = table.column(column)
    notes = []
    left = len(values) - sum(len(p) for p in parts)
    if left:
        others = sorted(set(values.tolist()) - set(silos))
        notes.append(f"{left} rows left out (their {column} is not a silo: {', '.join(others) or 'groups elsewhere'})")
    moved = sum(int(np.sum(values[p] != name)) for name, p in zip(silos, parts, strict=True))
    if moved:
        notes.append(f"{moved} rows joined the rest of their group at another {column}")
    return notes


def split_by_column(
    source: Path,
    out: Path,
    silos: Sequence[str],
    column: str,
    label_column: str,
    groups_key: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    force: bool = False,
    image_size: int = 28,
) -> SplitReport:
    """Write one folder per silo from ``source``: a CSV table, or an image release folder."""
    images = Path(source).is_dir()
    csv_path = ham10000.metadata_of(source) if images else Path(source)
    if images and not 4 <= image_size <= 600:
        raise ConfigError(f"image_size must be between 4 and 600 pixels, got {image_size}", fix="e.g. 28 or 64")
    params: dict[str, Any] = {
        "silos": list(silos),
        "method": "column",
        "column": column,
        "label_column": label_column,
        "groups_key": groups_key,
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "image_size": int(image_size) if images else None,
        "source_sha256": digests(csv_path)[1],
    }
    found = existing_split(Path(out), params, force)
    if found is not None:
        return found
    needed = [column, label_column] + ([groups_key] if groups_key else []) + (["image_id"] if images else [])
    table = read_table(csv_path, needed)
    present = sorted(set(table.column(column).tolist()))
    absent = [s for s in silos if s not in present]
    if absent:
        raise ConfigError(
            f"silo(s) {', '.join(absent)} are not values of column {column!r} in {csv_path.name}",
            fix=f"name silos after its values: {', '.join(present)}",
        )
    labels = table.column(label_column)
    groups = table.column(groups_key) if groups_key else None
    parts = partition.by_value(table.column(column), silos, groups)
    rng = np.random.default_rng(seed)
    try:
        cuts = {
            name: partition.holdout(part, test_fraction, rng, labels, groups)
            for name, part in zip(silos, parts, strict=True)
        }
    except ValueError as exc:
        raise ConfigError(f"cannot hold out a test set: {exc}", fix="adjust test_fraction or the silos") from exc
    server = np.sort(np.concatenate([test for _, test in cuts.values()]))
    classes = sorted(set(labels.tolist()))
    report = SplitReport(
        out=Path(out),
        method="column",
        seed=int(seed),
        silos=[
            {
                "name": name,
                "train": len(train),
                "test": len(test),
                "train_class_counts": _counts(labels[train], classes),
                "test_class_counts": _counts(labels[test], classes),
                **({"groups": len(set(groups[np.concatenate([train, test])].tolist()))} if groups is not None else {}),
            }
            for name, (train, test) in cuts.items()
        ],
        server_test=len(server),
        source=str(Path(source).resolve()),
        source_sha256=params["source_sha256"],
        params={**params},
        notes=[f"classes: {', '.join(classes)}", *_notes(table, column, silos, parts)],
    )
    pixels = _images(source, table, server, cuts, image_size) if images else None
    y_all = np.searchsorted(np.array(classes), labels).astype(np.int64)

    def write(folder: Path) -> None:
        pieces = [(f"{n}/{s}", idx) for n, cut in cuts.items() for s, idx in zip(("train", "test"), cut, strict=True)]
        for name in [*cuts, "server"]:
            (folder / name).mkdir()
        for rel, idx in [*pieces, ("server/test", server)]:
            save_csv(folder / f"{rel}.csv", table.header, table.rows(idx))
            if pixels is not None:
                save_npz(folder / f"{rel}.npz", {"x": pixels[idx], "y": y_all[idx]})

    commit_split(report, write)
    return report


def _images(
    root: Path, table: Table, server: np.ndarray, cuts: dict[str, tuple[np.ndarray, np.ndarray]], size: int
) -> np.ndarray:
    """Decoded images for every row any silo uses (rows left out are never read)."""
    used = np.unique(np.concatenate([server, *(train for train, _ in cuts.values())]))
    ids = table.column("image_id")
    pixels = np.zeros((len(ids), size, size, 3), dtype=np.uint8)
    pixels[used] = ham10000.read_images(ham10000.image_files(root, ids[used].tolist()), size)
    return pixels
