"""Secure aggregation in real runs: the same model as plain FedAvg in every runtime, up to fixed point.

The NumPy test task with three silos of unequal sizes (so a wrong weighting shows), two rounds;
in-process, the worker pool and the processes runtime here, Ray in test_ray.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.arrays import load_file
from fedsilo.experiment.config import load_config
from fedsilo.runtime.processes import run_processes
from fedsilo.runtime.runner import run_experiment

pytest.importorskip("cryptography")

SECAGG = {"privacy": {"secure_aggregation": True}}


def run_ok(cli: Any, path: Path, *args: str) -> None:
    result = cli("run", path, "--quiet", *args)
    assert result.exit_code == 0, result.stderr


def model_of(run_folder: Any, path: Path) -> dict[str, np.ndarray]:
    return load_file(run_folder(path.parent / "runs") / "model.safetensors")


def assert_same_model(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "worker-pool"])
def test_a_secure_run_gives_the_plain_fedavg_model(cli, make_experiment, run_folder, metrics_of, workers) -> None:
    plain = make_experiment(folder=f"plain{workers}", workers=workers, rounds=2, seed=3)
    secure = make_experiment(folder=f"secure{workers}", workers=workers, rounds=2, seed=3, extra=SECAGG)
    run_ok(cli, plain)
    run_ok(cli, secure)
    before = load_file(run_folder(plain.parent / "runs") / "checkpoints" / "round_0001.safetensors")
    assert_same_model(model_of(run_folder, plain), model_of(run_folder, secure))
    final = model_of(run_folder, plain)
    assert any(not np.allclose(before[f"model/{k}"], final[k]) for k in final)  # round 2 moved the model
    rows = [r for r in metrics_of(run_folder(secure.parent / "runs")) if r.get("phase") == "secagg"]
    assert sorted((r["round"], r["silo"]) for r in rows) == [(1, "a"), (1, "b"), (1, "c"), (2, "a"), (2, "b"), (2, "c")]
    assert all("failure" not in r and r["secagg_sent_bytes"] > 0 and r["secagg_received_bytes"] > 0 for r in rows)
    fit_rows = [r for r in metrics_of(run_folder(secure.parent / "runs")) if r.get("phase") == "fit"]
    assert {r["num_examples"] for r in fit_rows} == {12, 24, 36}


def test_a_secure_run_over_processes_matches_simulation(make_experiment, metrics_of) -> None:
    extra = {**SECAGG, "server": {"heartbeat_s": 0.5}}
    config, text = load_config(make_experiment(workers=2, rounds=2, seed=4, extra=extra))
    simulated = run_experiment(config, text)
    processes = run_processes(config.model_copy(update={"output": config.output.parent / "runs_p"}), text)
    assert_same_model(simulated.parameters, processes.parameters)
    assert processes.summary["failures"] == 0
    rows = [r for r in metrics_of(processes.run_dir) if r.get("phase") == "secagg"]
    assert len(rows) == 6 and all(r["secagg_sent_bytes"] > 0 for r in rows)
    assert "round 2: fit" in (processes.run_dir / "logs" / "a.log").read_text()
