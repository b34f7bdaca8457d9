"""A silo reading its own folder: the happy path and every one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.data.loaders import check_silo_folder, load_split
from fedsilo.errors import DataError


def make_silo(folder: Path, n_train: int = 200, n_test: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, size=(n_train, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 3, size=n_train).astype(np.int64)
    np.savez(folder / "train.npz", x=x, y=y)
    np.savez_compressed(folder / "test.npz", x=x[:n_test], y=y[:n_test])
    return x, y


def test_load_split_returns_the_arrays(tmp_path: Path) -> None:
    x, y = make_silo(tmp_path / "silo")
    got_x, got_y = load_split(tmp_path / "silo", "train")
    assert got_x.dtype == np.uint8 and np.array_equal(got_x, x)
    assert np.array_equal(got_y, y)


def test_check_silo_folder_counts_samples(tmp_path: Path) -> None:
    make_silo(tmp_path / "silo")
    assert check_silo_folder(tmp_path / "silo") == {"train": 200}
    assert check_silo_folder(tmp_path / "silo", ("train", "test")) == {"train": 200, "test": 50}


def write(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("setup", "message", "fix"),
    [
        (lambda d: None, "does not exist", "fedsilo data split"),
        (lambda d: d.mkdir(), "is missing", "experiment YAML"),
        (lambda d: write(d / "train.npz", x=np.zeros((3, 2))), "lacks array(s) y", "savez"),
        (
            lambda d: write(d / "train.npz", images=np.zeros(3)),
            "lacks array(s) x, y (found: images)",
            "savez",
        ),
        (
            lambda d: write(d / "train.npz", x=np.zeros((3, 2)), y=np.zeros(2)),
            "x has 3 samples but y has 2",
            "one label per sample",
        ),
        (
            lambda d: write(d / "train.npz", x=np.zeros((0, 2)), y=np.zeros(0)),
            "has no samples",
            "give this silo data",
        ),
        (
            lambda d: (d.mkdir(), (d / "train.npz").write_bytes(b"garbage")),
            "cannot read",
            "re-create",
        ),
    ],
)
@pytest.mark.parametrize("reader", ["load_split", "check_silo_folder"])
def test_bad_folders_give_one_line_data_errors(tmp_path: Path, setup, message: str, fix: str, reader: str) -> None:
    folder = tmp_path / "silo"
    setup(folder)
    with pytest.raises(DataError) as err:
        if reader == "load_split":
            load_split(folder, "train")
        else:
            check_silo_folder(folder)
    assert message in err.value.message
    assert fix in (err.value.fix or "")
    assert "\n" not in err.value.one_line()
