"""examples/skin_lesion: the YAMLs validate, a short run on a slice of the real sites works, lesions stay put.

The example's YAMLs and tasks are copied into tmp_path with every path pointing there, so nothing is
written into the repository. The tabular run uses a slice of the real HAM10000 metadata (the first
rows of each site); the image run uses a generated HAM10000 release (solid-colour JPEGs).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedsilo.errors import DataError
from fedsilo.experiment.config import load_config
from fedsilo.silo.task import TaskModule
from helpers import HAM_SITES, ham10000_rows, write_ham10000_release

pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "skin_lesion"
SHARED_CSV = EXAMPLE.parents[2] / "shared" / "data" / "HAM10000_metadata.csv"
YAMLS = ("experiment.yaml", "fedprox.yaml", "fedadam.yaml", "images.yaml", "dermamnist.yaml")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def copy_example(root: Path, yaml_name: str, data: Path, **changes: Any) -> Path:
    """The example's YAML in ``root``, its task beside it, silos and server under ``data``."""
    spec = yaml.safe_load((EXAMPLE / yaml_name).read_text())
    shutil.copy(EXAMPLE / spec["task"], root / spec["task"])
    if "prepare" in spec:
        spec["prepare"]["out"] = str(data)
    spec["silos"] = [{**s, "data": str(data / s["name"])} for s in spec["silos"]]
    spec["server"]["data"] = str(data / "server")
    spec["output"] = str(root / "runs")
    spec["train"]["device"] = "cpu"
    spec.update(changes)
    path = root / yaml_name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_every_yaml_loads_and_the_strategy_variants_change_only_the_strategy() -> None:
    configs = {name: load_config(EXAMPLE / name)[0] for name in YAMLS}
    sites = [s.name for s in configs["experiment.yaml"].silos]
    assert sites == list(HAM_SITES) == [s.name for s in configs["images.yaml"].silos]
    base = configs["experiment.yaml"].model_dump(exclude={"name", "strategy"})
    for variant, strategy in (("fedprox.yaml", "fedprox"), ("fedadam.yaml", "fedadam")):
        assert configs[variant].strategy.name == strategy
        assert configs[variant].model_dump(exclude={"name", "strategy"}) == base
    assert configs["dermamnist.yaml"].prepare is not None and configs["dermamnist.yaml"].prepare.dataset == "dermamnist"


def test_features_encode_a_row_as_documented() -> None:
    task = TaskModule.load(EXAMPLE / "task.py").module
    x = task.features(
        [
            {"age": "70", "sex": "female", "localization": "face"},
            {"age": "", "sex": "unknown", "localization": "unknown"},
            {"age": "30", "sex": "other", "localization": "elbow"},
        ]
    )
    assert x.shape == (3, 20) and x.dtype == np.float32
    expected = np.zeros((3, 20), np.float32)
    expected[0, [0, 3, 10]] = [1.0, 1.0, 1.0]  # age (70 - 50) / 20; female; face is localization 5
    expected[1, [1, 4, 18]] = 1.0  # age missing; sex unknown; localization unknown (13)
    expected[2, 0] = -1.0  # values outside the published vocabularies set no bit
    np.testing.assert_array_equal(x, expected)


def test_a_diagnosis_outside_the_seven_is_a_data_error(tmp_path: Path) -> None:
    task = TaskModule.load(EXAMPLE / "task.py").module
    (tmp_path / "train.csv").write_text("lesion_id,dx,age,sex,localization\nHAM_1,melanoma,50,male,back\n")
    with pytest.raises(DataError, match="unknown diagnoses melanoma"):
        task.load_data(tmp_path, "train")


def test_a_short_run_on_a_slice_of_the_real_sites(cli, tmp_path: Path, run_folder) -> None:
    if not SHARED_CSV.is_file():
        pytest.skip("the shared HAM10000 metadata is not beside this checkout")
    rows = read_rows(SHARED_CSV)
    sliced = [r for site in HAM_SITES for r in [r for r in rows if r["dataset"] == site][:150]]
    table = tmp_path / "slice.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(sliced)
    data = tmp_path / "data"
    experiment = copy_example(tmp_path, "experiment.yaml", data, rounds=2, runtime={"workers": 0})
    spec = yaml.safe_load(experiment.read_text())
    spec["prepare"]["dataset"] = str(table)
    experiment.write_text(yaml.safe_dump(spec, sort_keys=False))

    result = cli("validate", experiment)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.rstrip().endswith("valid") and not data.exists()  # validate only looks

    result = cli("run", experiment, "--baselines", "--quiet")
    assert result.exit_code == 0, result.stderr
    owner: dict[str, str] = {}
    for site in HAM_SITES:
        train, test = read_rows(data / site / "train.csv"), read_rows(data / site / "test.csv")
        assert not {r["lesion_id"] for r in train} & {r["lesion_id"] for r in test}
        for r in train + test:
            assert owner.setdefault(r["lesion_id"], site) == site
    server_rows = read_rows(data / "server" / "test.csv")
    assert len(server_rows) == sum(len(read_rows(data / s / "test.csv")) for s in HAM_SITES)

    summary = json.loads((run_folder(tmp_path / "runs") / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["failures"] == 0
    assert summary["final"]["num_examples"] == len(server_rows)
    assert set(summary["per_silo"]) == set(HAM_SITES)
    assert all(0 <= m["balanced_accuracy"] <= 1 for m in summary["per_silo"].values())
    base = summary["baselines"]
    assert set(base["local_only"]) == set(HAM_SITES) and base["epochs"] == 2
    for site in HAM_SITES:
        assert set(base["local_only"][site]["own_test"]) == {site}
    assert set(base["centralized"]["own_test"]) == set(HAM_SITES)
    assert base["centralized"]["train_examples"] == sum(len(read_rows(data / s / "train.csv")) for s in HAM_SITES)


def test_the_cnn_trains_on_a_generated_image_release(cli, tmp_path: Path, run_folder) -> None:
    pytest.importorskip("PIL")
    release = write_ham10000_release(tmp_path / "HAM10000", ham10000_rows())
    data = tmp_path / "images"
    sites = ",".join(HAM_SITES)
    result = cli(
        "data", "split", release, "--out", data, "--silos", sites, "--method", "column", "--column", "dataset",
        "--label-column", "dx", "--groups-key", "lesion_id", "--image-size", "16",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads((data / "split.json").read_text())["params"]["image_size"] == 16
    experiment = copy_example(tmp_path, "images.yaml", data, rounds=1, runtime={"workers": 0})
    task = TaskModule.load(tmp_path / "task_images.py").module
    x, y = task.load_data(data / "rosendahl", "train")
    assert x.shape[1:] == (3, 16, 16) and x.dtype == np.float32 and y.dtype == np.int64

    result = cli("run", experiment, "--quiet")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((run_folder(tmp_path / "runs") / "summary.json").read_text())
    assert summary["failures"] == 0
    assert summary["final"]["num_examples"] == len(read_rows(data / "server" / "test.csv"))
