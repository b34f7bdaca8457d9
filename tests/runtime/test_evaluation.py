"""runtime/evaluation.py end to end: a two-model task's server hooks every N rounds, grids, baselines.

The task (tests/tasks/tiny_gan.py) moves the generator's bias by ``lr * mean(x)`` per fit, so
after FedAvg (weights = training examples) each round adds ``lr`` times the mean of every
silo's training inputs: the server's numbers can be checked by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

from fedsilo.silo.task import TaskModule  # noqa: E402

GAN_TASK = Path(__file__).resolve().parents[1] / "tasks" / "tiny_gan.py"
LR = 0.5  # the make_experiment default


def train_mean(root: Path, silos: list[str]) -> float:
    xs = [np.load(root / "data" / s / "train.npz")["x"].astype(np.float64) for s in silos]
    return float(np.concatenate(xs).mean())


def grid_of(run: Path, name: str) -> np.ndarray:
    with Image.open(run / "samples" / f"{name}.png") as image:
        return np.asarray(image)


@pytest.mark.parametrize("workers", [0, 1])
def test_server_hooks_run_every_n_rounds_and_write_sample_grids(
    cli, make_experiment, run_folder, metrics_of, workers: int
) -> None:
    path = make_experiment(
        task=GAN_TASK, rounds=3, workers=workers, extra={"server": {"data": "data/server", "evaluate_every": 2}}
    )
    result = cli("run", path, "--quiet")
    assert result.exit_code == 0, result.stderr
    run, root = run_folder(path.parent / "runs"), path.parent
    start = float(TaskModule.load(GAN_TASK).initial_parameters(0)["generator.bias"].astype(np.float64).sum())
    mean = train_mean(root, ["a", "b", "c"])

    server = [r for r in metrics_of(run) if r["scope"] == "server" and r["phase"] == "evaluate"]
    assert [r["round"] for r in server] == [0, 2, 3]  # round 0, every 2nd, and the last
    for row in server:
        assert row["seen_round"] == row["round"] and row["rows"] == 40  # the server's test split
        assert row["generator_bias"] == pytest.approx(start + 4 * row["round"] * LR * mean, rel=1e-5)
        assert row["loss"] is None  # server_evaluate returned no "loss"
        assert row["samples"] == f"samples/round_{row['round']:04d}.png" and row["sample_rows"] == "zero, one"
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"round_{r:04d}.png" for r in (0, 2, 3)]
    grid = grid_of(run, "round_0003")
    assert grid.shape == (2 + 2 * (2 + 2), 2 + 3 * (2 + 2))  # 2 rows of three 2x2 tiles, 2 px padding
    tiles = [grid[y : y + 2, x : x + 2].astype(int) for y in (2, 6) for x in (2, 6, 10)]
    for zero, one in zip(tiles[:3], tiles[3:], strict=True):  # row "one" is 1 - row "zero"
        assert np.all(np.abs(zero + one - 255) <= 1)

    evaluations = [r for r in metrics_of(run) if r["scope"] == "silo" and r["phase"] == "evaluate"]
    assert {r["round"] for r in evaluations} == {1, 2, 3} and all("mean_x" in r for r in evaluations)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final"]["generator_bias"] == pytest.approx(server[-1]["generator_bias"])
    report = (run / "report.html").read_text()
    assert report.count("<img src='data:image/png;base64,") == 3
    assert "global model: generator bias" in report


def test_baselines_are_scored_by_the_same_hooks(cli, make_experiment, run_folder) -> None:
    path = make_experiment(task=GAN_TASK, rounds=2, extra={"server": {"data": "data/server", "evaluate_every": 5}})
    result = cli("run", path, "--baselines", "--quiet")
    assert result.exit_code == 0, result.stderr
    run, root = run_folder(path.parent / "runs"), path.parent
    start = float(TaskModule.load(GAN_TASK).initial_parameters(0)["generator.bias"].astype(np.float64).sum())
    base = json.loads((run / "summary.json").read_text())["baselines"]
    for silo in ("a", "b", "c"):  # one fit of all rounds' epochs: the bias moves once
        row = base["local_only"][silo]
        assert row["generator_bias"] == pytest.approx(start + 4 * LR * train_mean(root, [silo]), rel=1e-5)
        assert row["samples"] == f"samples/baseline_{silo}.png"
    assert base["centralized"]["samples"] == "samples/baseline_centralized.png"
    assert base["centralized"]["generator_bias"] == pytest.approx(start + 4 * LR * train_mean(root, ["a", "b", "c"]))
    names = sorted(p.stem for p in (run / "samples").iterdir())
    assert names == ["baseline_a", "baseline_b", "baseline_c", "baseline_centralized", "round_0000", "round_0002"]
    assert (run / "report.html").read_text().count("<img ") == 2 + 4  # 2 federated grids, 4 baselines
