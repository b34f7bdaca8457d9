"""Central DP, local DP and codecs in real runs: the worker pool, the run folder, the CLI, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedsilo.privacy.accounting import PrivacyAccountant, PrivacyEvent
from fedsilo.server.checkpoint import latest_checkpoint, load_checkpoint
from fedsilo.strategy.central_dp import CLIP
from fedsilo.wire.arrays import load_file

TASKS = Path(__file__).resolve().parents[1] / "tasks"
DP = {"noise_multiplier": 1.2, "clip_norm": 0.5}


def run_ok(cli, *args: Any) -> Any:
    result = cli("run", *args, "--quiet")
    assert result.exit_code == 0, result.stderr
    return result


def rows_of(metrics: list[dict[str, Any]], scope: str) -> list[dict[str, Any]]:
    """Silos' fit rows, or the server's row of each round."""
    return [r for r in metrics if r["scope"] == scope and r["phase"] == ("fit" if scope == "silo" else "round")]


def test_q8_in_a_real_run_sends_at_most_026_of_float32_per_silo(cli, make_experiment, run_folder, metrics_of) -> None:
    path = make_experiment(task=TASKS / "wide_torch.py", extra={"compression": {"codec": "q8"}})
    run_ok(cli, path)
    run = run_folder(path.parent / "runs")
    silos = rows_of(metrics_of(run), "silo")
    assert len(silos) == 6 and all("failure" not in r for r in silos)
    for r in silos:
        assert r["upload_bytes"] / r["upload_bytes_raw"] <= 0.26
    summary = json.loads((run / "summary.json").read_text())
    assert summary["upload"]["ratio"] <= 0.26
    assert summary["final"]["accuracy"] > 0.6  # decoded updates still train the model


def test_topk_residuals_survive_silos_moving_between_workers(cli, make_experiment, run_folder, metrics_of) -> None:
    """The same seed gives the same model with 1 worker (residuals in one process) and 2 workers."""
    models = []
    for folder, workers in (("one", 1), ("two", 2)):
        extra = {"compression": {"codec": "topk", "topk_fraction": 0.25}}
        path = make_experiment(folder=folder, workers=workers, rounds=3, extra=extra)
        run_ok(cli, path)
        run = run_folder(path.parent / "runs")
        models.append(load_file(run / "model.safetensors"))
        assert all("failure" not in r for r in rows_of(metrics_of(run), "silo"))
    for name in models[0]:
        np.testing.assert_array_equal(models[0][name], models[1][name])


def test_central_dp_reports_epsilon_per_round_and_in_the_summary(cli, make_experiment, run_folder, metrics_of) -> None:
    extra = {"privacy": {"dp": DP}, "strategy": {"fraction_fit": 0.6, "min_fit_clients": 2}}
    path = make_experiment(rounds=3, extra=extra)
    validated = cli("validate", path)
    rate = 2 / 3
    three = PrivacyAccountant().record(PrivacyEvent(1.2, rate, 3)).epsilon(1e-5)
    assert f"central DP: epsilon {three:.3f} at delta 1e-05 after 3 rounds" in validated.stdout
    run_ok(cli, path)
    run = run_folder(path.parent / "runs")
    server = rows_of(metrics_of(run), "server")
    expected = [PrivacyAccountant().record(PrivacyEvent(1.2, rate, n)).epsilon(1e-5) for n in (1, 2, 3)]
    assert [r["epsilon"] for r in server] == expected
    central = json.loads((run / "summary.json").read_text())["privacy"]["central"]
    assert central == {
        "epsilon": three, "delta": 1e-5, "noise_multiplier": 1.2, "clip_norm": 0.5, "rounds": 3, "accountant": "rdp"
    }  # fmt: skip


def test_target_epsilon_ends_the_run_early_with_its_model_and_reason(cli, make_experiment, run_folder) -> None:
    two, three = (PrivacyAccountant().record(PrivacyEvent(1.2, 1.0, n)).epsilon(1e-5) for n in (2, 3))
    path = make_experiment(rounds=5, extra={"privacy": {"dp": {**DP, "target_epsilon": (two + three) / 2}}})
    result = cli("run", path)
    assert result.exit_code == 0, result.stderr
    assert "stopped before round 3" in result.stdout
    run = run_folder(path.parent / "runs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["privacy"]["central"]["epsilon"] == two
    assert "stopped before round 3" in summary["stopped_early"]
    assert load_checkpoint(latest_checkpoint(run / "checkpoints")).round == 2
    assert (run / "model.safetensors").exists()


def test_resume_with_adaptive_clipping_continues_the_same_c_and_epsilon(cli, make_experiment, run_folder) -> None:
    dp = {"privacy": {"dp": {**DP, "adaptive": True, "count_stddev": 1.0}}}
    straight = make_experiment(folder="straight", rounds=3, extra=dp)
    run_ok(cli, straight)
    full = run_folder(straight.parent / "runs")
    stopped = make_experiment(folder="stopped", rounds=1, extra=dp)
    run_ok(cli, stopped)
    part = run_folder(stopped.parent / "runs")
    run_ok(cli, "--resume", part, "--rounds", "3")

    a, b = (load_checkpoint(latest_checkpoint(r / "checkpoints")) for r in (full, part))
    for name in a.parameters:
        np.testing.assert_array_equal(a.parameters[name], b.parameters[name])
    assert a.state.values == b.state.values  # the same C and accountant
    assert a.state.values[CLIP] != 0.5  # C moved
    sa, sb = (json.loads((r / "summary.json").read_text())["privacy"] for r in (full, part))
    assert sa == sb and sa["central"]["rounds"] == 3


def test_local_dp_reports_each_silos_epsilon_across_rounds_and_workers(
    cli, make_experiment, run_folder, metrics_of, torch_task
) -> None:
    local = {"noise_multiplier": 1.0, "max_grad_norm": 1.0}
    path = make_experiment(task=torch_task, workers=2, extra={"privacy": {"local_dp": local}})
    run_ok(cli, path)
    run = run_folder(path.parent / "runs")
    by = {(r["round"], r["silo"]): r for r in rows_of(metrics_of(run), "silo")}
    for silo, n in (("a", 12), ("b", 24), ("c", 36)):
        batches = -(-n // 8)  # Opacus's Poisson loader: rate 1 / batches, batches steps an epoch
        assert by[(1, silo)]["dp_steps"] == batches and by[(2, silo)]["dp_steps"] == 2 * batches
        expected = PrivacyAccountant().record(PrivacyEvent(1.0, 1 / batches, 2 * batches)).epsilon(1e-5)
        assert by[(2, silo)]["epsilon"] == expected
    summary = json.loads((run / "summary.json").read_text())
    assert summary["privacy"]["local"] == {s: by[(2, s)]["epsilon"] for s in ("a", "b", "c")}


def test_privacy_settings_that_cannot_work_are_refused_before_training(cli, make_experiment) -> None:
    robust = make_experiment(folder="robust", extra={"privacy": {"dp": DP}, "strategy": {"name": "median"}})
    result = cli("validate", robust)
    assert result.exit_code == 2 and "strategy median looks at each update on its own" in result.stderr
    numpy_local = make_experiment(folder="local", extra={"privacy": {"local_dp": {"noise_multiplier": 1.0}}})
    result = cli("validate", numpy_local)
    assert (
        result.exit_code == 5 and "privacy.local_dp trains with Opacus (PyTorch) but the task is numpy" in result.stderr
    )
    topk = make_experiment(folder="topk", extra={"compression": {"codec": "topk", "topk_fraction": 0.6}})
    result = cli("validate", topk)
    assert result.exit_code == 2 and "topk_fraction=0.6" in result.stderr


def silo_epsilons(run: Path) -> dict[str, float]:
    return json.loads((run / "summary.json").read_text())["privacy"]["local"]


RESUMED_STATE = {
    "topk": {"compression": {"codec": "topk", "topk_fraction": 0.3}},
    "local_dp": {"privacy": {"local_dp": {"noise_multiplier": 1.0, "max_grad_norm": 1.0}}},
}


@pytest.mark.parametrize("kind", sorted(RESUMED_STATE))
@pytest.mark.parametrize("interrupted", [False, True], ids=["after-a-round", "mid-round"])
def test_resume_continues_the_silos_own_state_exactly(
    cli, make_experiment, run_folder, torch_task: Path, kind: str, interrupted: bool
) -> None:
    """Top-k residuals and local-DP accountants live in the run folder and are read as of the checkpoint.

    ``mid-round``: the run got through round 3 (the silos wrote round 3's state) but its last
    checkpoint is round 2's, as when a crash comes between the silos' fits and the checkpoint:
    the resumed round 3 must start from the silos' state after round 2, not after round 3.
    """
    extra = RESUMED_STATE[kind]
    straight = make_experiment(folder="straight", task=torch_task, workers=2, rounds=4, extra=extra)
    run_ok(cli, straight)
    full = run_folder(straight.parent / "runs")
    stopped = make_experiment(folder="stopped", task=torch_task, workers=2, rounds=3 if interrupted else 2, extra=extra)
    run_ok(cli, stopped)
    part = run_folder(stopped.parent / "runs")
    assert any((part / "silo_store").rglob("*.r000002.*"))  # the silos' state is in the run folder
    if interrupted:
        (part / "checkpoints" / "round_0003.safetensors").unlink()
    run_ok(cli, "--resume", part, "--rounds", "4")
    a, b = (load_file(r / "model.safetensors") for r in (full, part))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    if kind == "local_dp":
        assert silo_epsilons(part) == silo_epsilons(full)
        assert min(silo_epsilons(full).values()) > 0
