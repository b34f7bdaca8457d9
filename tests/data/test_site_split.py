"""Natural silos: ``partition.by_value`` and ``fedsilo data split --method column`` on tables and images."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fedsilo.data.partition import by_value
from fedsilo.data.split import format_report, split_dataset
from fedsilo.errors import ConfigError, DataError
from helpers import HAM_COLOURS, HAM_DX, HAM_SITES, ham10000_rows, write_ham10000_release

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SITE_ARGS = {"method": "column", "column": "dataset", "label_column": "dx", "groups_key": "lesion_id"}


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def file_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.*"))}


# --- the pure partition -----------------------------------------------------------------------

VALUES = np.array(["a", "b", "a", "c", "b", "a", "b", "c", "b"])
GROUPS = np.array([1, 1, 2, 3, 4, 4, 4, 5, 5])


def test_by_value_without_groups_takes_each_row_to_its_own_site() -> None:
    a, b = by_value(VALUES, ["a", "b"])
    assert a.tolist() == [0, 2, 5] and b.tolist() == [1, 4, 6, 8]  # the two "c" rows are left out


def test_by_value_keeps_a_group_whole_at_its_majority_site() -> None:
    a, b = by_value(VALUES, ["a", "b"], GROUPS)
    # group 1 ties a:b 1:1 -> a (listed first); group 4 is b 2 : a 1 -> b; group 5 is c 1 : b 1,
    # and c is no silo -> b; group 3 is only at c -> left out.
    assert a.tolist() == [0, 1, 2] and b.tolist() == [4, 5, 6, 7, 8]
    b_first, a_second = by_value(VALUES, ["b", "a"], GROUPS)
    assert b_first.tolist() == [0, 1, 4, 5, 6, 7, 8] and a_second.tolist() == [2]


def test_by_value_rejects_repeated_names_and_misaligned_groups() -> None:
    with pytest.raises(ValueError, match="distinct"):
        by_value(VALUES, ["a", "a"])
    with pytest.raises(ValueError, match="groups has 2 entries"):
        by_value(VALUES, ["a"], np.array([1, 2]))


# --- the split of a table -----------------------------------------------------------------------


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "meta.csv"
    rows = ham10000_rows()
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_column_split_gives_each_site_its_rows_and_keeps_lesions_apart(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = split_dataset(table, out, list(HAM_SITES), seed=1, **SITE_ARGS)  # type: ignore[arg-type]
    source = read_rows(table)
    seen: dict[str, str] = {}
    union = []
    for site in HAM_SITES:
        train, test = read_rows(out / site / "train.csv"), read_rows(out / site / "test.csv")
        assert train and test
        lesions = {r["lesion_id"] for r in train}
        assert not lesions & {r["lesion_id"] for r in test}  # no lesion in both splits
        for r in train + test:
            assert seen.setdefault(r["lesion_id"], site) == site  # no lesion in two silos
            if r["lesion_id"] != "HAM_0000900":
                assert r["dataset"] == site
        union += test
    # the lesion at two sites went wholly to vidir_modern, which holds 2 of its 3 images
    assert seen["HAM_0000900"] == "vidir_modern"
    assert sum(len(read_rows(out / s / f"{k}.csv")) for s in HAM_SITES for k in ("train", "test")) == len(source)
    server = read_rows(out / "server" / "test.csv")
    order = [r["image_id"] for r in source]
    assert [r["image_id"] for r in server] == sorted((r["image_id"] for r in union), key=order.index)
    assert report.server_test == len(server)
    assert "1 rows joined the rest of their group at another dataset" in report.notes
    first = report.silos[0]
    molemax_train = read_rows(out / "vidir_molemax" / "train.csv")
    assert first["train_class_counts"] == {dx: sum(r["dx"] == dx for r in molemax_train) for dx in HAM_DX}
    assert format_report(report)[0][:4] == ["silo", "train", "test", "class akiec"]
    saved = json.loads((out / "split.json").read_text())
    assert saved["params"]["column"] == "dataset" and saved["params"]["image_size"] is None


def test_column_split_is_byte_identical_idempotent_and_guarded(table: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    split_dataset(table, first, list(HAM_SITES), seed=2, **SITE_ARGS)  # type: ignore[arg-type]
    split_dataset(table, second, list(HAM_SITES), seed=2, **SITE_ARGS)  # type: ignore[arg-type]
    assert file_digests(first) == file_digests(second)
    again = split_dataset(table, first, list(HAM_SITES), seed=2, **SITE_ARGS)  # type: ignore[arg-type]
    assert again.already_existed
    with pytest.raises(DataError, match="other parameters"):
        split_dataset(table, first, list(HAM_SITES), seed=3, **SITE_ARGS)  # type: ignore[arg-type]


def test_column_split_leaves_out_sites_that_are_not_silos(table: Path, tmp_path: Path) -> None:
    report = split_dataset(table, tmp_path / "out", ["rosendahl", "vienna_dias"], **SITE_ARGS)  # type: ignore[arg-type]
    kept = [r for r in read_rows(table) if r["dataset"] in ("rosendahl", "vienna_dias")]
    assert sum(s["train"] + s["test"] for s in report.silos) == len(kept)
    assert any("left out" in n and "vidir_modern, vidir_molemax" in n for n in report.notes)


def test_column_split_errors_name_the_fix(table: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="graz are not values of column 'dataset'") as err:
        split_dataset(table, tmp_path / "a", ["rosendahl", "graz"], **SITE_ARGS)  # type: ignore[arg-type]
    assert err.value.fix == "name silos after its values: rosendahl, vidir_modern, vidir_molemax, vienna_dias"
    with pytest.raises(DataError, match="no column.*site"):
        split_dataset(table, tmp_path / "b", ["rosendahl"], **{**SITE_ARGS, "column": "site"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs the column"):
        split_dataset(table, tmp_path / "c", ["rosendahl"], method="column")
    with pytest.raises(ConfigError, match="need method 'column'"):
        split_dataset(table, tmp_path / "d", ["rosendahl"], column="dataset")


def test_real_metadata_by_site_keeps_every_lesion_in_one_silo_and_split(tmp_path: Path) -> None:
    if not (SHARED / "HAM10000_metadata.csv").is_file():
        pytest.skip("the shared HAM10000 metadata is not beside this checkout")
    out = tmp_path / "sites"
    report = split_dataset("ham10000_metadata", out, list(HAM_SITES), **SITE_ARGS)  # type: ignore[arg-type]
    totals = {s["name"]: s["train"] + s["test"] for s in report.silos}
    # the published site sizes, less the 8 images that joined their lesion's other two at vidir_modern
    # and plus 1 image of the one lesion split 1:1, which went to vidir_molemax (listed first)
    expected = {"vidir_molemax": 3954 - 8 + 1, "vidir_modern": 3363 + 8 - 1, "rosendahl": 2259, "vienna_dias": 439}
    assert totals == expected
    owner: dict[str, str] = {}
    for site in HAM_SITES:
        train = {r["lesion_id"] for r in read_rows(out / site / "train.csv")}
        test = {r["lesion_id"] for r in read_rows(out / site / "test.csv")}
        assert not train & test
        for lesion in train | test:
            assert owner.setdefault(lesion, site) == site
    assert len(owner) == 7470  # every published lesion, each in exactly one silo


# --- the split of an image release --------------------------------------------------------------


def test_image_release_split_writes_the_images_row_for_row(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    release = write_ham10000_release(tmp_path / "HAM10000", ham10000_rows())
    out = tmp_path / "images"
    report = split_dataset(release, out, list(HAM_SITES), image_size=8, **SITE_ARGS)  # type: ignore[arg-type]
    assert report.params["image_size"] == 8
    for rel in [f"{s}/{k}" for s in HAM_SITES for k in ("train", "test")] + ["server/test"]:
        rows = read_rows(out / f"{rel}.csv")
        with np.load(out / f"{rel}.npz", allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
        assert x.shape == (len(rows), 8, 8, 3) and x.dtype == np.uint8
        assert y.tolist() == [HAM_DX.index(r["dx"]) for r in rows]  # alphabetical = DermaMNIST's labels
        expected = np.array([HAM_COLOURS[HAM_DX.index(r["dx"])] for r in rows], dtype=np.int64)
        assert np.abs(x.reshape(len(rows), -1, 3).astype(np.int64) - expected[:, None, :]).max() <= 6  # JPEG


def test_image_release_with_a_missing_image_says_which(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    release = write_ham10000_release(tmp_path / "HAM10000", ham10000_rows())
    (release / "HAM10000_images_part_1" / "ISIC_0000000.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of \d+ images are missing.*ISIC_0000000\.jpg"):
        split_dataset(release, tmp_path / "out", list(HAM_SITES), **SITE_ARGS)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no HAM10000_metadata.csv"):
        split_dataset(empty, tmp_path / "x", ["a"], **SITE_ARGS)  # type: ignore[arg-type]
