"""Secure aggregation in real runs: the same model as plain FedAvg in every runtime, up to fixed point.

The NumPy test task with three silos of unequal sizes (so a wrong weighting shows), two rounds;
in-process, the worker pool and the processes runtime here, Ray in test_ray.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.experiment.config import load_config
from fedsilo.runtime.launch import run_experiment
from fedsilo.wire.arrays import load_file
from helpers import run_in_processes

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
    processes = run_in_processes(config.model_copy(update={"output": config.output.parent / "runs_p"}), text)
    assert_same_model(simulated.parameters, processes.parameters)
    assert processes.summary["failures"] == 0
    rows = [r for r in metrics_of(processes.run_dir) if r.get("phase") == "secagg"]
    assert len(rows) == 6 and all(r["secagg_sent_bytes"] > 0 for r in rows)
    assert "round 2: fit" in (processes.run_dir / "logs" / "a.log").read_text()


def test_distributed_dp_with_secure_aggregation_reports_epsilon_and_uses_uniform_weights(
    cli, make_experiment, run_folder, metrics_of
) -> None:
    """Silo-side clipping and noise, the accountant's epsilon per round; nearly noise-free here, so the
    model is the central-DP run's (uniform weights over the same silos), not example-weighted FedAvg."""
    from fedsilo.privacy.accounting import PrivacyAccountant, PrivacyEvent

    dp = {"noise_multiplier": 1e-7, "clip_norm": 50.0}
    secure = make_experiment(
        folder="sdp", workers=2, rounds=2, seed=5, extra={"privacy": {**SECAGG["privacy"], "dp": dp}}
    )
    central = make_experiment(folder="cdp", workers=2, rounds=2, seed=5, extra={"privacy": {"dp": dp}})
    plain = make_experiment(folder="pdp", workers=2, rounds=2, seed=5)
    for path in (secure, central, plain):
        run_ok(cli, path)
    a, b = model_of(run_folder, central), model_of(run_folder, secure)
    for k in a:  # the two runs draw their (tiny, std ~5e-6) noise differently
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-4)
    weighted, uniform = model_of(run_folder, plain), model_of(run_folder, secure)
    assert any(np.abs(weighted[k] - uniform[k]).max() > 1e-3 for k in weighted)
    rounds = [
        r for r in metrics_of(run_folder(secure.parent / "runs")) if r["scope"] == "server" and r["phase"] == "round"
    ]
    expected = [PrivacyAccountant().record(PrivacyEvent(1e-7, 1.0, n)).epsilon(1e-5) for n in (1, 2)]
    assert [r["epsilon"] for r in rounds] == expected
    assert [r["updates"] for r in rounds] == [3, 3]
    assert all(r["upload_bytes"] > 0 for r in rounds)
