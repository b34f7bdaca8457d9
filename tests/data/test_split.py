"""``split_dataset``: layout, counts, determinism, idempotence and refusal to lose data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fedsilo.data import split as split_module
from fedsilo.data.loaders import check_silo_folder, load_split
from fedsilo.data.split import format_report, split_dataset
from fedsilo.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


def make_source(path: Path, n: int = 200, n_test: int = 60, with_test: bool = True) -> Path:
    """MedMNIST-layout npz: 4x4 uint8 images, 3 classes, (N, 1) labels, a patient id per sample.

    Pixel [0, 0] holds the sample index (mod 256) and pixel [0, 1] its high byte, so a test can
    tell which source samples ended up where.
    """
    rng = np.random.default_rng(42)
    x = rng.integers(0, 256, size=(n, 4, 4), dtype=np.uint8)
    x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    arrays = {
        "train_images": x,
        "train_labels": rng.integers(0, 3, size=(n, 1)).astype(np.uint8),
        "train_patient": np.arange(n) // 4,  # 50 patients with 4 images each
    }
    if with_test:
        arrays["test_images"] = rng.integers(0, 256, size=(n_test, 4, 4), dtype=np.uint8)
        arrays["test_labels"] = rng.integers(0, 3, size=(n_test, 1)).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def sample_ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0].astype(np.int64) + 256 * x[:, 0, 1].astype(np.int64)


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.npz"))
    }


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_source(tmp_path / "source.npz")


def test_iid_split_layout_and_counts(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = split_dataset(source, out, ["north", "south", "east"], sizes=[1, 1, 2], seed=3)
    assert sorted(p.name for p in out.iterdir()) == ["east", "north", "server", "south", "split.json"]
    assert [s["name"] for s in report.silos] == ["north", "south", "east"]
    assert [s["train"] + s["test"] for s in report.silos] == [50, 50, 100]
    assert all(s["test"] == round(0.2 * (s["train"] + s["test"])) for s in report.silos)
    seen: list[np.ndarray] = []
    for silo in report.silos:
        counts = check_silo_folder(out / silo["name"], ("train", "test"))
        assert counts == {"train": silo["train"], "test": silo["test"]}
        x, y = load_split(out / silo["name"], "train")
        assert x.dtype == np.uint8 and x.shape[1:] == (4, 4) and y.dtype == np.int64
        assert {str(c): int(n) for c, n in zip(*np.unique(y, return_counts=True), strict=True)} == {
            c: n for c, n in silo["train_class_counts"].items() if n
        }
        seen += [sample_ids(x), sample_ids(load_split(out / silo["name"], "test")[0])]
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(200))  # disjoint, complete
    assert report.server_test == 60 and len(load_split(out / "server", "test")[1]) == 60
    saved = json.loads((out / "split.json").read_text())
    assert saved["params"]["sizes"] == [1.0, 1.0, 2.0] and saved["source_sha256"]
    assert json.loads(report.to_json())["already_existed"] is False


def test_format_report_rows(source: Path, tmp_path: Path) -> None:
    rows = format_report(split_dataset(source, tmp_path / "out", ["a", "b"]))
    assert rows[0] == ["silo", "train", "test", "class 0", "class 1", "class 2"]
    assert [r[0] for r in rows] == ["silo", "a", "b", "server", "total (silos)"]
    assert rows[-1][1:3] == ["160", "40"] and rows[3][2] == "60"
    assert all(len(r) == len(rows[0]) for r in rows)


def test_same_seed_gives_byte_identical_files(source: Path, tmp_path: Path) -> None:
    args = {"silos": ["a", "b", "c"], "method": "dirichlet", "alpha": 0.3, "seed": 5}
    first = digests(split_dataset(source, tmp_path / "one", **args).out)
    second = digests(split_dataset(source, tmp_path / "two", **args).out)
    assert first == second and len(first) == 7
    other = digests(split_dataset(source, tmp_path / "three", **{**args, "seed": 6}).out)
    assert other != first


def test_second_identical_call_changes_nothing(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = split_dataset(source, out, ["a", "b"], seed=1)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = split_dataset(source, out, ["a", "b"], seed=1)
    assert again.already_existed and not first.already_existed
    assert again.silos == first.silos and again.params == first.params
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_other_parameters_refuse_without_force(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    split_dataset(source, out, ["a", "b"], seed=1)
    before = digests(out)
    with pytest.raises(DataError) as err:
        split_dataset(source, out, ["a", "b"], seed=2)
    assert "--force" in err.value.one_line()
    assert digests(out) == before
    report = split_dataset(source, out, ["a", "b"], seed=2, force=True)
    assert report.params["seed"] == 2 and digests(out) != before
    assert json.loads((out / "split.json").read_text())["params"]["seed"] == 2


def test_foreign_files_are_not_overwritten(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        split_dataset(source, out, ["a"])
    assert (out / "notes.txt").read_text() == "mine"
    split_dataset(source, out, ["a"], force=True)
    assert not (out / "notes.txt").exists() and (out / "split.json").is_file()


def test_interrupted_split_leaves_nothing_behind(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = split_module._save_npz
    calls = []

    def failing_save(path: Path, arrays: dict[str, np.ndarray]) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_save(path, arrays)

    monkeypatch.setattr(split_module, "_save_npz", failing_save)
    parent = tmp_path / "splits"
    with pytest.raises(KeyboardInterrupt):
        split_dataset(source, parent / "out", ["a", "b"])
    assert list(parent.iterdir()) == []


def test_no_test_split_holds_out_server_data(tmp_path: Path) -> None:
    source = make_source(tmp_path / "no_test.npz", with_test=False)
    report = split_dataset(source, tmp_path / "out", ["a", "b"], test_fraction=0.25)
    assert report.server_test == 50
    assert sum(s["train"] + s["test"] for s in report.silos) == 150
    assert "no test split" in report.notes[0]


def test_group_split_keeps_each_patient_in_one_place(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = split_dataset(source, out, ["a", "b", "c"], method="group", groups_key="patient")
    owners: dict[int, set[str]] = {}
    for silo in report.silos:
        for part in ("train", "test"):
            for patient in set(sample_ids(load_split(out / silo["name"], part)[0]) // 4):
                owners.setdefault(int(patient), set()).add(f"{silo['name']}/{part}")
    assert len(owners) == 50 and all(len(places) == 1 for places in owners.values())


def test_group_split_needs_a_group_key(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="groups key"):
        split_dataset(source, tmp_path / "out", ["a"], method="group")
    with pytest.raises(ConfigError) as err:
        split_dataset(source, tmp_path / "out", ["a"], method="group", groups_key="lesion")
    assert "train_patient" in err.value.one_line() and "train_images" in err.value.one_line()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"silos": []}, "no silos"),
        ({"silos": ["a", ""]}, "invalid silo name"),
        ({"silos": ["a/b"]}, "invalid silo name"),
        ({"silos": ["server"]}, "invalid silo name"),
        ({"silos": ["a", "a"]}, "repeat"),
        ({"method": "shards"}, "unknown split method"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"sizes": [1, 2, 3]}, "sizes has 3 entries"),
        ({"silos": [f"s{i}" for i in range(150)]}, "cannot split"),
    ],
)
def test_bad_options_are_config_errors(source: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_dataset(source, tmp_path / "out", **{"silos": ["a", "b"], **kwargs})
    assert not (tmp_path / "out").exists()


def test_unknown_source_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a known dataset"):
        split_dataset("no-such-dataset", tmp_path / "out", ["a"])


@pytest.mark.skipif(not (SHARED / "pneumoniamnist.npz").is_file(), reason=f"shared data folder {SHARED} is absent")
def test_real_pneumoniamnist_dirichlet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDSILO_DATA_DIR", raising=False)
    monkeypatch.chdir(REPO)  # found through data_dirs(): shared/data beside the checkout
    out = tmp_path / "pneumonia"
    report = split_dataset("pneumoniamnist", out, ["h1", "h2", "h3"], method="dirichlet", sizes=[2, 3, 5], seed=0)
    assert sum(s["train"] + s["test"] for s in report.silos) == 4708
    assert sum(sum(s["train_class_counts"].values()) for s in report.silos) == sum(s["train"] for s in report.silos)
    assert report.server_test == 624
    assert check_silo_folder(out / "server", ("test",)) == {"test": 624}
