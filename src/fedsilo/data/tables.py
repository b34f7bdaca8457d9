"""Read a per-row metadata table (a CSV with a header) as a 2-D array of strings.

Tabular sources such as the HAM10000 metadata carry their silo, group and label as columns, not
as arrays in an .npz. Cells stay strings (an empty ``age`` stays empty): turning them into
features is the task's job, so every silo encodes its rows the same way the task says.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsilo.errors import DataError


@dataclass(frozen=True)
class Table:
    """``cells[i, j]`` is row ``i``'s value of column ``header[j]``, in file order."""

    path: Path
    header: tuple[str, ...]
    cells: np.ndarray

    def column(self, name: str) -> np.ndarray:
        return self.cells[:, self.header.index(name)]

    def rows(self, index: np.ndarray) -> list[list[str]]:
        return [list(row) for row in self.cells[index]]


def read_table(path: Path, required: Sequence[str]) -> Table:
    """The CSV at ``path``; every column in ``required`` must be in its header."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = tuple(next(reader, []))
            rows = [row for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} as a CSV table: {exc}", fix="restore the file") from exc
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path} has no column(s) {', '.join(missing)} (columns: {', '.join(header) or 'none'})",
            fix="name existing columns, or use a table that has them",
        )
    ragged = next((i for i, row in enumerate(rows, start=2) if len(row) != len(header)), None)
    if ragged is not None:
        raise DataError(f"{path}: line {ragged} does not have {len(header)} fields", fix="repair the file")
    if not rows:
        raise DataError(f"{path} has a header but no rows", fix="use a table with data")
    return Table(path, header, np.array(rows, dtype=str))
