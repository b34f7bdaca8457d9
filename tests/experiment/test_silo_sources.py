"""experiment/silo_sources.py: ``silos: {from_split: DIR}`` and ``silos: {folders: PATTERN}``.

Both expand into the same list a hand-written ``silos:`` gives; every problem with them is one
line that joins the file's other problems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.data.split import split_dataset
from fedsilo.errors import ConfigError
from fedsilo.experiment.config import parse_config


def spec(silos: Any, **extra: Any) -> dict[str, Any]:
    return {"name": "exp", "task": "task.py", "rounds": 1, "silos": silos, **extra}


def error_of(data: dict[str, Any], base: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, base, "exp.yaml")
    assert info.value.exit_code == 2
    return info.value.one_line()


def test_from_split_lists_the_silos_the_split_wrote_in_its_order(tmp_path: Path) -> None:
    source = tmp_path / "source.npz"
    rng = np.random.default_rng(0)
    np.savez(source, x_train=rng.normal(size=(40, 3)), y_train=np.arange(40) % 2, x_test=np.zeros((5, 3)),
             y_test=np.zeros(5, np.int64))  # fmt: skip
    names = ["zeta", "alpha", "mid"]  # not sorted: the split's order is kept
    split_dataset(source, tmp_path / "data" / "three", names, seed=0)

    config = parse_config(spec({"from_split": "data/three"}), tmp_path)

    assert [s.name for s in config.silos] == names
    assert [s.data for s in config.silos] == [(tmp_path / "data" / "three" / n).resolve() for n in names]
    assert all((s.data / "train.npz").is_file() for s in config.silos)


def test_folders_matches_a_pattern_sorted_by_name_leaving_out_server(tmp_path: Path) -> None:
    for name in ("b", "a", "server"):
        (tmp_path / "data" / name).mkdir(parents=True)
    (tmp_path / "data" / "notes.txt").write_text("a file, not a silo")

    config = parse_config(spec({"folders": "data/*"}), tmp_path)

    assert [(s.name, s.data) for s in config.silos] == [
        ("a", tmp_path / "data" / "a"),
        ("b", tmp_path / "data" / "b"),
    ]


def test_an_absolute_pattern_is_taken_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "silos" / "h1").mkdir(parents=True)
    config = parse_config(spec({"folders": str(tmp_path / "silos" / "*")}), Path("/elsewhere"))
    assert [s.name for s in config.silos] == ["h1"]


def test_a_missing_split_names_the_file_and_joins_the_other_problems(tmp_path: Path) -> None:
    line = error_of(spec({"from_split": "data/none"}, rounds=0), tmp_path)
    assert f"silos.from_split: {tmp_path / 'data' / 'none' / 'split.json'} does not exist" in line
    assert "fedsilo data split" in line
    assert "rounds: Input should be greater than or equal to 1" in line
    assert "silos: Field required" not in line


def test_a_split_json_without_silos_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "split.json").write_text('{"method": "iid"}')
    assert "silos.from_split:" in error_of(spec({"from_split": "odd"}), tmp_path)
    assert "lists no silos" in error_of(spec({"from_split": "odd"}), tmp_path)


def test_a_pattern_that_matches_nothing_says_where_it_looked(tmp_path: Path) -> None:
    line = error_of(spec({"folders": "data/*"}), tmp_path)
    assert f"silos.folders: no folder matches 'data/*' (looked for {tmp_path / 'data' / '*'})" in line


@pytest.mark.parametrize(
    ("silos", "expected"),
    [
        ({"from_split": "a", "folders": "b/*"}, "silos: 2 of from_split, folders given"),
        ({}, "silos: 0 of from_split, folders given"),
        ({"from_splt": "a"}, "silos: unknown key(s) from_splt"),
        ({"folders": 3}, "silos.folders: expected a path, got 3"),
    ],
)
def test_a_malformed_mapping_says_what_to_write(tmp_path: Path, silos: Any, expected: str) -> None:
    line = error_of(spec(silos), tmp_path)
    assert expected in line
    assert "silos: {from_split: DIR}" in line


def test_names_repeated_across_folders_are_reported(tmp_path: Path) -> None:
    for site in ("north", "south"):
        (tmp_path / site / "clinic").mkdir(parents=True)
    assert "silo names must be unique; repeated: clinic" in error_of(spec({"folders": "*/*"}), tmp_path)


def test_many_bad_names_give_a_short_line(tmp_path: Path) -> None:
    for i in range(15):
        (tmp_path / "data" / f"bad.{i:02d}").mkdir(parents=True)
    line = error_of(spec({"folders": "data/*"}), tmp_path)
    assert line.count("use letters, digits") == 10
    assert "and 5 more problem(s)" in line
