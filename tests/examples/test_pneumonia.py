"""The real pneumonia example, small: validate, split the real PneumoniaMNIST file, one round.

The example's YAML and task are copied into tmp_path with every path pointing there, so nothing
is written into the repository. Silos run in the real worker pool (2 workers).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from fedsilo.data.datasets import find_dataset
from fedsilo.errors import DatasetNotFound

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pneumonia"


@pytest.fixture
def pneumonia_experiment(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    try:
        find_dataset("pneumoniamnist")
    except DatasetNotFound as exc:
        pytest.skip(f"PneumoniaMNIST is not available here: {exc.message}")
    spec = yaml.safe_load((EXAMPLE / "experiment.yaml").read_text())
    shutil.copy(EXAMPLE / "task.py", tmp_path / "task.py")
    data = tmp_path / "data" / "pneumonia"
    spec["prepare"]["out"] = str(data)
    spec["silos"] = [{**s, "data": str(data / s["name"])} for s in spec["silos"]]
    spec["server"]["data"] = str(data / "server")
    spec["output"] = str(tmp_path / "runs")
    spec["rounds"] = 1
    spec["train"]["device"] = "cpu"
    spec["runtime"] = {"workers": 2}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_pneumonia_validates_then_runs_one_round(cli, pneumonia_experiment: Path, run_folder, metrics_of) -> None:
    root = pneumonia_experiment.parent

    result = cli("validate", pneumonia_experiment)
    assert result.exit_code == 0, result.stderr
    assert "(torch)" in result.stdout
    for name in ("hospital_a", "hospital_b", "hospital_c"):
        assert name in result.stdout
    assert result.stdout.rstrip().endswith("valid")
    assert not (root / "data").exists()  # validate only looks

    result = cli("run", pneumonia_experiment, "--quiet")
    assert result.exit_code == 0, result.stderr
    for name in ("hospital_a", "hospital_b", "hospital_c", "server"):
        assert (root / "data" / "pneumonia" / name / "test.npz").is_file()
    run = run_folder(root / "runs")
    assert (run / "model.safetensors").is_file()
    assert (run / "checkpoints" / "round_0001.safetensors").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 1 and summary["failures"] == 0
    assert summary["final"]["num_examples"] == 624  # the official PneumoniaMNIST test split
    assert summary["final"]["accuracy"] > 0.6
    fits = {r["silo"]: r["num_examples"] for r in metrics_of(run) if r["phase"] == "fit"}
    assert set(fits) == {"hospital_a", "hospital_b", "hospital_c"}
    assert fits["hospital_a"] < fits["hospital_b"] < fits["hospital_c"]  # sizes 2 : 3 : 5
    # Every path the run used lies in tmp_path: nothing was written into the repository.
    config = json.loads((run / "config.json").read_text())
    used = [config["task"], config["output"], config["prepare"]["out"], config["server"]["data"]]
    used += [s["data"] for s in config["silos"]]
    assert all(Path(p).is_relative_to(root) for p in used), used
    assert Path(summary["run_dir"]).is_relative_to(root)


@pytest.mark.parametrize("name", ["dp.yaml", "dp_30.yaml"])
def test_the_dp_examples_stay_within_epsilon_8_at_delta_1e5(name: str) -> None:
    from fedsilo.experiment.config import load_config
    from fedsilo.experiment.privacy_plan import projected_epsilon
    from fedsilo.privacy.accounting import PrivacyAccountant, PrivacyEvent

    config, _ = load_config(EXAMPLE / name)
    assert config.privacy.dp is not None and config.privacy.dp.delta == 1e-5
    projected = projected_epsilon(config)
    assert projected is not None
    epsilon, allowed = projected
    assert epsilon == PrivacyAccountant().record(PrivacyEvent(2.2, 1.0, 10)).epsilon(1e-5)
    assert epsilon <= 8 and allowed == config.rounds == 10
