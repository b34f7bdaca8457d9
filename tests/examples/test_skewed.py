"""examples/pneumonia/skewed.yaml: it validates, and its split has the sizes and mixes its README shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.data.datasets import find_dataset
from fedsilo.data.split import split_dataset
from fedsilo.errors import DatasetNotFound
from fedsilo.experiment.config import load_config

SKEWED = Path(__file__).resolve().parents[2] / "examples" / "pneumonia" / "skewed.yaml"


@pytest.fixture
def pneumonia() -> Path:
    try:
        return find_dataset("pneumoniamnist")
    except DatasetNotFound as exc:
        pytest.skip(f"PneumoniaMNIST is not available here: {exc.message}")


def test_skewed_yaml_validates(cli, pneumonia: Path) -> None:
    pytest.importorskip("torch")
    result = cli("validate", SKEWED)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.rstrip().endswith("valid")
    for name in ("hospital_small", "hospital_mid", "hospital_large"):
        assert name in result.stdout


def test_its_split_has_sizes_2_10_20_and_different_case_mixes(tmp_path: Path, pneumonia: Path) -> None:
    config, _ = load_config(SKEWED)
    p = config.prepare
    assert p is not None and p.sizes == [2, 10, 20]
    report = split_dataset(
        p.dataset,
        tmp_path / "split",
        [s.name for s in config.silos],
        method=p.method,
        alpha=p.alpha,
        sizes=p.sizes,
        test_fraction=p.test_fraction,
        seed=p.seed,
    )
    totals = np.array([s["train"] + s["test"] for s in report.silos])
    assert totals.sum() == 4708  # the whole PneumoniaMNIST train split
    # Dirichlet sizes are drawn, not exact: this seed keeps each within 5% of its share.
    np.testing.assert_allclose(totals / totals.sum(), np.array([2, 10, 20]) / 32, rtol=0.05)
    pneumonia_share = [s["train_class_counts"]["1"] / s["train"] for s in report.silos]
    assert pneumonia_share[0] < 0.15 and 0.45 < pneumonia_share[1] < 0.75 and pneumonia_share[2] > 0.8
    assert report.server_test == 624
