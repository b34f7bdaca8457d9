"""DermaMNIST (not shipped): the registry entry, its checksum check, and its layout, on a generated file."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from fedsilo.data.catalogue import DATASETS
from fedsilo.data.datasets import find_dataset, load_arrays, verify
from fedsilo.data.split import split_dataset
from fedsilo.errors import ChecksumMismatch, DatasetNotFound

PUBLISHED_MD5 = "0744692d530f8e62ec473284d019b0c7"  # medmnist 3.0.2, medmnist/info.py["dermamnist"]["MD5"]
SPLIT_SIZES = {"train": 70, "val": 10, "test": 20}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FEDSILO_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write_dermamnist(path: Path) -> Path:
    """MedMNIST v2 layout: <split>_images (N, 28, 28, 3) uint8, <split>_labels (N, 1) in 0..6."""
    rng = np.random.default_rng(7)
    arrays = {}
    for split, n in SPLIT_SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 7).reshape(n, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def test_registry_knows_dermamnist_by_its_published_md5() -> None:
    info = DATASETS["dermamnist"]
    assert info.filename == "dermamnist.npz" and info.md5 == PUBLISHED_MD5 and info.sha256 is None
    assert info.url == "https://zenodo.org/records/10519652/files/dermamnist.npz?download=1"


def test_missing_offline_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as err:
        find_dataset("dermamnist", data_dirs=[tmp_path / "data"])
    line = err.value.one_line()
    assert f"dermamnist.npz (md5 {PUBLISHED_MD5}) in {tmp_path / 'data'}" in line
    assert "FEDSILO_DATA_DIR" in line and "--download" in line


def test_a_file_that_is_not_the_published_one_is_refused(tmp_path: Path) -> None:
    path = write_dermamnist(tmp_path / "data" / "dermamnist.npz")
    with pytest.raises(ChecksumMismatch) as err:
        find_dataset("dermamnist", data_dirs=[tmp_path / "data"])
    line = err.value.one_line()
    assert PUBLISHED_MD5 in line and hashlib.md5(path.read_bytes()).hexdigest() in line


def test_the_published_checksum_is_what_lets_a_file_through(tmp_path: Path) -> None:
    path = write_dermamnist(tmp_path / "dermamnist.npz")
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    verify(path, dataclasses.replace(DATASETS["dermamnist"], md5=actual))  # same entry, this file's md5: accepted
    with pytest.raises(ChecksumMismatch):
        verify(path, DATASETS["dermamnist"])


def test_layout_loads_and_splits_like_dermamnist_yaml(tmp_path: Path) -> None:
    path = write_dermamnist(tmp_path / "dermamnist.npz")
    arrays = load_arrays(path)
    assert {k: len(y) for k, (_, y) in arrays.items()} == SPLIT_SIZES
    x, y = arrays["train"]
    assert x.shape == (70, 28, 28, 3) and y.shape == (70,) and y.dtype == np.int64
    silos = ["site_a", "site_b", "site_c", "site_d"]
    report = split_dataset(path, tmp_path / "out", silos, method="dirichlet", alpha=1.0, sizes=[3954, 3363, 2259, 439])
    assert sum(s["train"] + s["test"] for s in report.silos) == 70
    assert report.server_test == 20  # DermaMNIST's own test split
    with np.load(tmp_path / "out" / "site_a" / "train.npz") as npz:
        assert npz["x"].shape[1:] == (28, 28, 3)
