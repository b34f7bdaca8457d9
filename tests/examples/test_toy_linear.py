"""examples/toy_linear: the four-point linear regression across bob and alice really learns.

The example's files are copied into tmp_path (output pointed there too), then run for real: in
this process (``runtime.workers: 0``) and in the worker pool, which must give the same model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedsilo.experiment.config import load_config
from fedsilo.runtime.launch import run_experiment
from fedsilo.silo.task import TaskModule

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "toy_linear"


def _copy_example(root: Path, workers: int | str) -> Path:
    for name in ("task.py", "bob.csv", "alice.csv"):
        shutil.copy(EXAMPLE / name, root / name)
    spec = yaml.safe_load((EXAMPLE / "experiment.yaml").read_text())
    spec["output"] = str(root / "runs")
    spec["runtime"] = {"workers": workers}
    spec["train"]["device"] = "cpu"
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_the_four_points_lie_on_the_documented_line() -> None:
    task = TaskModule.load(EXAMPLE / "task.py")
    x, y = task.load_data([EXAMPLE / "bob.csv", EXAMPLE / "alice.csv"], "train")
    assert x.shape == (4, 2) and y.shape == (4, 1)
    np.testing.assert_array_equal(y[:, 0], 2 * x[:, 0] - 3 * x[:, 1] + 1)


@pytest.mark.parametrize("workers", [0, "auto"])
def test_loss_goes_down_every_round(tmp_path: Path, metrics_of, workers: int | str) -> None:
    pytest.importorskip("torch")
    config, text = load_config(_copy_example(tmp_path, workers))
    result = run_experiment(config, text)

    task = TaskModule.load(config.task)
    everyone = task.make_client([tmp_path / "bob.csv", tmp_path / "alice.csv"], config.seed, "cpu")
    initial_loss, n, _ = everyone.evaluate(task.initial_parameters(config.seed), {})
    assert n == 4
    rows = [r for r in metrics_of(result.run_dir) if r["scope"] == "federated" and r["phase"] == "evaluate"]
    losses = [r["loss"] for r in sorted(rows, key=lambda r: r["round"])]
    assert len(losses) == config.rounds
    assert all(r["num_examples"] == 4 for r in rows)
    steps = [initial_loss, *losses]
    assert all(after < before for before, after in zip(steps, steps[1:], strict=False)), steps
    assert losses[-1] < initial_loss / 100
    # The learnt line is close to the one the points were drawn from: y = 2*x1 - 3*x2 + 1.
    np.testing.assert_allclose(result.parameters["weight"], [[2.0, -3.0]], atol=0.2)
    np.testing.assert_allclose(result.parameters["bias"], [1.0], atol=0.2)
