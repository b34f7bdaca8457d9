"""examples/breast_cancer_sklearn: scikit-learn logistic regression across three clinics, for real.

The dataset is the copy scikit-learn ships, found through the dataset registry and split by the
experiment's `prepare:` section into tmp_path; the run goes through the in-process path and the
worker pool (where each worker builds the scikit-learn client itself).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("sklearn")

from fedsilo.data.datasets import find_dataset, load_arrays  # noqa: E402
from fedsilo.errors import DataError  # noqa: E402
from fedsilo.experiment.config import load_config  # noqa: E402
from fedsilo.runtime.launch import run_experiment  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "breast_cancer_sklearn"


def test_the_registry_finds_scikit_learns_copy_and_reads_it() -> None:
    import sklearn.datasets

    path = find_dataset("breast_cancer_wisconsin")
    assert path.name == "breast_cancer.csv"  # scikit-learn's copy unless a data folder holds one
    x, y = load_arrays(path)["train"]
    expected_x, expected_y = sklearn.datasets.load_breast_cancer(return_X_y=True)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [212, 357]  # malignant, benign


def test_a_csv_that_is_not_scikit_learns_layout_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "table.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="scikit-learn data CSV"):
        load_arrays(bad)


def _copy_example(root: Path, workers: int | str, rounds: int) -> Path:
    shutil.copy(EXAMPLE / "task.py", root / "task.py")
    spec = yaml.safe_load((EXAMPLE / "experiment.yaml").read_text())
    data = root / "data"
    spec["prepare"]["out"] = str(data)
    spec["silos"] = [{**s, "data": str(data / s["name"])} for s in spec["silos"]]
    spec["server"]["data"] = str(data / "server")
    spec["output"] = str(root / "runs")
    spec["rounds"] = rounds
    spec["runtime"] = {"workers": workers}
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.parametrize(("workers", "baselines"), [(0, False), ("auto", True)])
def test_three_rounds_beat_chance_clearly(tmp_path: Path, metrics_of, workers: int | str, baselines: bool) -> None:
    config, text = load_config(_copy_example(tmp_path, workers, rounds=3))
    result = run_experiment(config, text, baselines=baselines)

    split = json.loads((tmp_path / "data" / "split.json").read_text())
    assert split["server_test"] == 114  # 20% of the 569 cases held out for the server
    assert sum(s["train"] + s["test"] for s in split["silos"]) == 569 - 114
    summary = result.summary
    assert summary["rounds"] == 3 and summary["failures"] == 0
    final = summary["final"]
    assert final["num_examples"] == 114
    majority = max(np.mean(np.load(tmp_path / "data" / "server" / "test.npz")["y"] == c) for c in (0, 1))
    assert final["accuracy"] > 0.9 > majority + 0.2  # always answering "benign" scores about 0.63
    assert final["loss"] < np.log(2) / 2  # log loss, well below the all-zero model's ln 2
    assert result.parameters["coef"].shape == (1, 30)
    fits = [r for r in metrics_of(result.run_dir) if r["phase"] == "fit"]
    assert {r["silo"] for r in fits} == {"clinic_a", "clinic_b", "clinic_c"}
    if baselines:
        base = summary["baselines"]
        assert set(base["local_only"]) == {"clinic_a", "clinic_b", "clinic_c"}
        assert base["centralized"]["accuracy"] > 0.9
        assert base["centralized"]["train_examples"] == sum(s["train"] for s in split["silos"])
