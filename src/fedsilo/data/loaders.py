"""Read a silo's own data folder: ``<folder>/<split>.npz`` holding arrays ``x`` and ``y``.

This is the layout ``fedsilo data split`` writes. Every problem becomes a one-line DataError
with a fix, because a silo operator reads these messages far from the code.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedsilo.errors import DataError

_MAKE = "run `fedsilo data split ...` to create it, or correct the path in the experiment YAML"


def folder_problem(folder: Path, needs_folder: bool = True) -> str | None:
    """Why a silo's ``data:`` path cannot be read, or None: it does not exist, or it is a file
    where a folder is needed (this module's loader; a task's own ``load_data`` may read a file)."""
    if not Path(folder).exists():
        return "does not exist"
    if needs_folder and not Path(folder).is_dir():
        return "is a file, not a folder"
    return None


def require_folder(folder: Path, needs_folder: bool = True) -> Path:
    """``folder``, or a DataError saying whether it is missing or a file (see :func:`folder_problem`)."""
    problem = folder_problem(folder, needs_folder)
    if problem is not None:
        raise DataError(f"silo data folder {folder} {problem}", fix=_MAKE)
    return Path(folder)


def non_finite(array: object) -> int:
    """How many values of a float array (numpy, or a tensor by its methods) are NaN or infinite."""
    if isinstance(array, np.ndarray):
        return int(array.size - np.count_nonzero(np.isfinite(array))) if array.dtype.kind in "fc" else 0
    if getattr(getattr(array, "dtype", None), "is_floating_point", False):  # a torch tensor, without torch
        return int((~array.isfinite()).sum())  # type: ignore[attr-defined]
    return 0


def check_finite(data: object, folder: Path, split: str) -> None:
    """A silo's ``(x, y)`` holds no NaN or infinity (one pass over the arrays, when they are loaded).

    Else the silo's training would send a non-finite update, and the error would blame the update.
    """
    if not isinstance(data, tuple | list):
        return  # a Dataset: its items are the task's to check
    for name, part in zip(("x", "y", *(f"part {i}" for i in range(2, len(data)))), data, strict=False):
        bad = non_finite(part)
        if bad:
            raise DataError(
                f"silo data {folder} ({split}) holds {bad} non-finite values (NaN or inf) in {name}",
                "fix or drop those samples in the silo's data, then split it again",
            )


def _split_path(folder: Path, split: str) -> Path:
    path = require_folder(folder) / f"{split}.npz"
    if not path.is_file():
        raise DataError(f"silo data file {path} is missing", fix=_MAKE)
    return path


def _check(path: Path, keys: Sequence[str], n_x: int, n_y: int) -> int:
    missing = [k for k in ("x", "y") if k not in keys]
    if missing:
        raise DataError(
            f"{path} lacks array(s) {', '.join(missing)} (found: {', '.join(keys) or 'none'})",
            fix="write it with numpy.savez(path, x=inputs, y=labels)",
        )
    if n_x != n_y:
        raise DataError(
            f"{path}: x has {n_x} samples but y has {n_y}",
            fix="write x and y with one label per sample",
        )
    if n_x == 0:
        raise DataError(
            f"silo data {path} has no samples",
            fix="give this silo data or leave it out of the experiment",
        )
    return n_x


def _rows(shape: tuple[int, ...]) -> int:
    return int(shape[0]) if shape else 0  # a 0-d array holds no samples


def _unreadable(path: Path, exc: Exception) -> DataError:
    return DataError(f"cannot read {path}: {exc}", fix=f"re-create it; {_MAKE}")


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(x, y)`` from ``<folder>/<split>.npz``."""
    path = _split_path(folder, split)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            x = npz["x"] if "x" in keys else np.empty(0)
            y = npz["y"] if "y" in keys else np.empty(0)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _unreadable(path, exc) from exc
    _check(path, keys, _rows(x.shape), _rows(y.shape))
    return x, y


def _leading_dim(archive: zipfile.ZipFile, member: str) -> int:
    """Number of rows of an array in an .npz, read from its .npy header only (no pixel data)."""
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape = np.lib.format.read_array_header_1_0(f)[0]
        else:
            shape = np.lib.format.read_array_header_2_0(f)[0]
    return _rows(shape)


def check_silo_folder(folder: Path, splits: Sequence[str] = ("train",)) -> dict[str, int]:
    """Sample count per split, checked cheaply (headers and labels only) for ``validate``."""
    counts = {}
    for split in splits:
        path = _split_path(folder, split)
        try:
            with zipfile.ZipFile(path) as archive:
                keys = [n.removesuffix(".npy") for n in archive.namelist()]
                n_x = _leading_dim(archive, "x.npy") if "x" in keys else 0
                n_y = _leading_dim(archive, "y.npy") if "y" in keys else 0
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise _unreadable(path, exc) from exc
        counts[split] = _check(path, keys, n_x, n_y)
    return counts
