"""runtime/runner.py end to end through `fedsilo run`: the run folder, determinism, resume, baselines.

Runs use the NumPy task with ``runtime.workers: 0`` (silos in this process): a few rounds take
well under a second. The worker pool has its own tests in test_simulation.py.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedsilo.server.checkpoint import load_checkpoint
from fedsilo.wire.arrays import load_file


def run_ok(cli, *args: Any) -> Any:
    result = cli("run", *args, "--quiet")
    assert result.exit_code == 0, result.stderr
    return result


def model_of(run_dir: Path) -> dict[str, np.ndarray]:
    return load_file(run_dir / "model.safetensors")


def assert_same_model(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])


def without_time(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def row_keys(rows: list[dict[str, Any]]) -> Counter:
    return Counter((r["round"], r["scope"], r["silo"], r["phase"]) for r in rows)


def test_run_writes_the_run_folder(cli, make_experiment, run_folder, metrics_of) -> None:
    path = make_experiment(rounds=3)
    result = run_ok(cli, path)
    run = run_folder(path.parent / "runs")
    assert run.name.startswith("exp-")
    assert str(run) in result.stdout.replace("\n", "")
    assert "final test accuracy" in result.stdout

    assert (run / "experiment.yaml").read_text() == path.read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["rounds"] == 3
    assert Path(config["silos"][0]["data"]).is_absolute()
    assert Path(config["silos"][0]["data"]) == (path.parent / "data" / "a").resolve()

    rows = metrics_of(run)
    assert {r["scope"] for r in rows} == {"server", "silo", "federated"}
    assert all(isinstance(r["round"], int) for r in rows)
    server = [r for r in rows if r["scope"] == "server" and r["phase"] == "evaluate"]
    assert [r["round"] for r in server] == [0, 1, 2, 3]
    for r in server:
        assert r["silo"] is None
        assert {"loss", "accuracy", "balanced_accuracy"} <= set(r)
        assert r["num_examples"] == 40
    silo_rows = [r for r in rows if r["scope"] == "silo"]
    assert {r["silo"] for r in silo_rows} == {"a", "b", "c"}
    fits = {(r["round"], r["silo"]): r for r in silo_rows if r["phase"] == "fit"}
    assert len(fits) == 9
    assert [fits[(1, s)]["num_examples"] for s in "abc"] == [12, 24, 36]
    evaluations = [r for r in silo_rows if r["phase"] == "evaluate"]
    assert all("loss" in r and "accuracy" in r for r in evaluations)
    federated = [r for r in rows if r["scope"] == "federated"]
    assert [r["round"] for r in federated] == [1, 2, 3]
    assert all(r["silo"] is None and r["num_examples"] == 8 + 10 + 12 for r in federated)
    assert not any("failure" in r for r in rows)

    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "round_0001.safetensors",
        "round_0002.safetensors",
        "round_0003.safetensors",
    ]
    model = model_of(run)
    assert set(model) == {"w", "b"} and model["w"].shape == (4, 2) and model["w"].dtype == np.float32
    assert_same_model(model, load_checkpoint(run / "checkpoints" / "round_0003.safetensors").parameters)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["seed"] == 0 and summary["failures"] == 0
    assert summary["silos"] == ["a", "b", "c"]
    assert summary["final"]["round"] == 3
    assert summary["final"]["accuracy"] == server[-1]["accuracy"]
    assert summary["final"]["loss"] == server[-1]["loss"]
    assert summary["federated"]["worst_silo"] in {"a", "b", "c"}
    assert summary["run_dir"] == str(run)
    assert "baselines" not in summary
    # It learned something: the task is nearly linearly separable.
    assert summary["final"]["accuracy"] > server[0]["accuracy"]
    assert summary["final"]["accuracy"] >= 0.8


def test_cli_overrides_rounds_seed_and_output(cli, make_experiment, run_folder, tmp_path: Path) -> None:
    path = make_experiment(rounds=5)
    run_ok(cli, path, "--rounds", "1", "--seed", "4", "--out", tmp_path / "elsewhere")
    run = run_folder(tmp_path / "elsewhere")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["rounds"], summary["seed"]) == (1, 4)
    assert not (path.parent / "runs").exists()


def test_same_seed_same_model_other_seed_other_model(cli, make_experiment, run_folder) -> None:
    models = []
    for folder, seed in (("first", 3), ("second", 3), ("third", 4)):
        path = make_experiment(folder=folder, seed=seed)
        run_ok(cli, path)
        models.append(model_of(run_folder(path.parent / "runs")))
    assert_same_model(models[0], models[1])
    assert not np.array_equal(models[0]["w"], models[2]["w"])


def test_resume_gives_the_uninterrupted_result(cli, make_experiment, run_folder, metrics_of) -> None:
    straight = make_experiment(folder="straight", rounds=3)
    run_ok(cli, straight)
    full = run_folder(straight.parent / "runs")

    stopped = make_experiment(folder="stopped", rounds=1)
    run_ok(cli, stopped)
    part = run_folder(stopped.parent / "runs")
    run_ok(cli, "--resume", part, "--rounds", "3")
    assert run_folder(stopped.parent / "runs") == part  # continued in place, no new folder

    assert_same_model(model_of(part), model_of(full))
    rows = metrics_of(part)
    assert max(row_keys(rows).values()) == 1  # each round's rows once
    assert {r["round"] for r in rows} == {0, 1, 2, 3}
    assert without_time(rows) == without_time(metrics_of(full))
    assert len(list((part / "checkpoints").iterdir())) == 3
    summary = json.loads((part / "summary.json").read_text())
    assert summary["rounds"] == 3
    assert json.loads((part / "config.json").read_text())["rounds"] == 3


def test_resume_after_losing_the_last_checkpoint_reruns_that_round(
    cli, make_experiment, run_folder, metrics_of
) -> None:
    path = make_experiment(rounds=3)
    run_ok(cli, path)
    run = run_folder(path.parent / "runs")
    expected_model, expected_rows = model_of(run), without_time(metrics_of(run))

    # A crash during round 3's checkpoint: the file is gone but round 3's rows were written.
    (run / "checkpoints" / "round_0003.safetensors").unlink()
    (run / "model.safetensors").unlink()
    (run / "summary.json").unlink()
    run_ok(cli, "--resume", run)

    assert_same_model(model_of(run), expected_model)
    rows = metrics_of(run)
    assert max(row_keys(rows).values()) == 1
    assert without_time(rows) == expected_rows
    assert (run / "checkpoints" / "round_0003.safetensors").exists()


def test_resume_errors_are_one_line(cli, make_experiment, tmp_path: Path, run_folder) -> None:
    result = cli("run", "--resume", tmp_path / "not_a_run")
    assert result.exit_code == 8
    assert "not a fedsilo run folder" in result.stderr and "Traceback" not in result.stderr

    path = make_experiment(rounds=1)
    run_ok(cli, path)
    run = run_folder(path.parent / "runs")
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").mkdir()
    result = cli("run", "--resume", run)
    assert result.exit_code == 8
    assert "has no checkpoint to resume from" in result.stderr


def test_a_failing_silo_is_recorded_and_the_run_goes_on(cli, make_experiment, run_folder, metrics_of) -> None:
    path = make_experiment(rounds=2)
    (path.parent / "data" / "b" / "RAISE").write_text("")
    result = run_ok(cli, path)
    run = run_folder(path.parent / "runs")
    failures = [r for r in metrics_of(run) if "failure" in r]
    assert [(r["round"], r["silo"], r["failure_kind"]) for r in failures] == [(1, "b", "error"), (2, "b", "error")]
    assert "RuntimeError: training crashed in b" in failures[0]["failure"]
    assert json.loads((run / "summary.json").read_text())["failures"] == 2
    assert "2 silo failures" in " ".join(result.stdout.split())


def test_a_round_with_too_few_updates_stops_the_run_with_one_line(cli, make_experiment, run_folder) -> None:
    path = make_experiment(rounds=2, extra={"strategy": {"min_fit_clients": 3}})
    (path.parent / "data" / "c" / "NAN").write_text("")
    result = cli("run", path, "--quiet")
    assert result.exit_code == 7
    line = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "Traceback" not in result.stderr
    assert "round 1: 2 of 3 silos returned a usable update" in line[0]
    assert "c: update from silo 'c' rejected" in line[0]
    run = run_folder(path.parent / "runs")
    assert "--resume" in line[0]
    assert not any((run / "checkpoints").iterdir())


def test_baselines_are_written_to_the_summary(cli, make_experiment, run_folder) -> None:
    path = make_experiment(rounds=2)
    result = run_ok(cli, path, "--baselines")
    summary = json.loads((run_folder(path.parent / "runs") / "summary.json").read_text())
    base = summary["baselines"]
    assert base["epochs"] == 2
    assert base["centralized"]["train_examples"] == 12 + 24 + 36
    assert 0.0 <= base["centralized"]["accuracy"] <= 1.0 and "loss" in base["centralized"]
    assert list(base["local_only"]) == ["a", "b", "c"]
    for name, n in (("a", 12), ("b", 24), ("c", 36)):
        assert base["local_only"][name]["train_examples"] == n
        assert 0.0 <= base["local_only"][name]["accuracy"] <= 1.0
    assert "centralized" in result.stdout


def test_baselines_do_not_change_the_federated_run(cli, make_experiment, run_folder, metrics_of) -> None:
    plain = make_experiment(folder="plain", rounds=2)
    run_ok(cli, plain)
    with_baselines = make_experiment(folder="with_baselines", rounds=2)
    run_ok(cli, with_baselines, "--baselines")
    run = run_folder(with_baselines.parent / "runs")
    # The pooled pseudo-silo holds every silo's data: it must never train as a federated silo.
    assert {r["silo"] for r in metrics_of(run) if r["scope"] == "silo"} == {"a", "b", "c"}
    assert_same_model(model_of(run), model_of(run_folder(plain.parent / "runs")))


def test_baselines_without_a_server_test_set_are_skipped(cli, make_experiment, run_folder) -> None:
    path = make_experiment(rounds=1, server=False)
    run_ok(cli, path, "--baselines")
    summary = json.loads((run_folder(path.parent / "runs") / "summary.json").read_text())
    assert "server.data" in summary["baselines"]["skipped"]
    assert summary["final"] is None


def test_a_model_with_a_zero_dim_buffer_trains_and_resumes(cli, make_experiment, run_folder, tmp_path: Path) -> None:
    # torch's BatchNorm keeps num_batches_tracked as a 0-d tensor: aggregation, checkpoints and
    # resume must all hand it back as a 0-d array the silos accept.
    pytest.importorskip("torch")
    task = tmp_path / "bn_task.py"
    task.write_text(
        "from torch import nn\n\n\ndef model():\n"
        "    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))\n"
    )
    straight = make_experiment(folder="bn_straight", rounds=2, task=task)
    run_ok(cli, straight)
    stopped = make_experiment(folder="bn_stopped", rounds=1, task=task)
    run_ok(cli, stopped)
    part = run_folder(stopped.parent / "runs")
    run_ok(cli, "--resume", part, "--rounds", "2")
    assert_same_model(model_of(part), model_of(run_folder(straight.parent / "runs")))


def test_the_yaml_source_is_kept_verbatim(cli, make_experiment, run_folder) -> None:
    path = make_experiment(rounds=1)
    text = "# my notes\n" + path.read_text()
    path.write_text(text)
    run_ok(cli, path)
    run = run_folder(path.parent / "runs")
    assert (run / "experiment.yaml").read_text() == text
    assert yaml.safe_load(text)["name"] == "exp"


def test_allowed_failed_rounds_keep_the_last_good_model_and_the_run_goes_on(
    cli, make_experiment, run_folder, metrics_of
) -> None:
    path = make_experiment(rounds=3, extra={"strategy": {"min_fit_clients": 3}, "server": {"failed_rounds_allowed": 2}})
    (path.parent / "data" / "c" / "NAN").write_text("")  # c's update is rejected every round: every round fails
    result = cli("run", path, "--quiet")
    assert result.exit_code == 7  # a third failure in a row is one more than allowed
    run = run_folder(path.parent / "runs")
    failed = [r for r in metrics_of(run) if r["scope"] == "server" and "failure" in r]
    assert [r["round"] for r in failed] == [1, 2]
    assert {r["phase"] for r in failed} == {"round"}  # the round's own row, as when it succeeds (it said "fit")
    assert "round 1 failed; keeping the last good model" in " ".join(result.stderr.split())
    after_1 = load_file(run / "checkpoints" / "round_0001.safetensors")
    after_2 = load_file(run / "checkpoints" / "round_0002.safetensors")
    for name in after_1:
        np.testing.assert_array_equal(after_1[name], after_2[name])  # round 2 failed too: the model did not move


def test_a_silo_failing_once_costs_one_round_when_failures_are_allowed(cli, make_experiment, run_folder) -> None:
    path = make_experiment(rounds=3, extra={"strategy": {"min_fit_clients": 3}, "server": {"failed_rounds_allowed": 1}})
    (path.parent / "data" / "c" / "NAN_ONCE").write_text("")
    result = cli("run", path, "--quiet")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((run_folder(path.parent / "runs") / "summary.json").read_text())
    assert summary["failed_rounds"] == [1] and summary["rounds"] == 3
    assert summary["final"] is not None


@pytest.mark.parametrize("runtime", ["in_process", "pool", "processes"])
def test_a_silo_lying_in_its_evaluation_is_rejected_and_the_summary_stays_json(
    cli, make_experiment, run_folder, metrics_of, runtime: str
) -> None:
    from fedsilo.experiment.config import load_config
    from helpers import TASKS, run_in_processes

    path = make_experiment(rounds=2, workers=int(runtime == "pool"), task=TASKS / "lying_numpy.py")
    (path.parent / "data" / "b" / "EVAL_LOSS").write_text("nan")
    (path.parent / "data" / "c" / "EVAL_METRICS").write_text('{"failure": 1, "num_examples": 1e30}')
    if runtime == "processes":
        pytest.importorskip("grpc")
        run_in_processes(*load_config(path))
    else:
        assert "4 silo failures" in " ".join(run_ok(cli, path).stdout.split())
    run = run_folder(path.parent / "runs")
    for name in ("metrics.jsonl", "summary.json"):
        assert "NaN" not in (run / name).read_text()
    summary = json.loads((run / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert summary["failures"] == 4  # b and c, each round, once each
    assert summary["federated"]["num_examples"] == 8  # a's test set alone
    assert summary["federated"]["loss"] > 0
    rejected = [r for r in metrics_of(run) if r.get("failure_kind") == "rejected"]
    assert {(r["round"], r["silo"]) for r in rejected} == {(1, "b"), (1, "c"), (2, "b"), (2, "c")}
    assert "loss=nan" in rejected[0]["failure"] + rejected[1]["failure"]


def test_a_silo_cannot_write_escape_sequences_to_the_console_or_the_run_folder(
    cli, make_experiment, run_folder, metrics_of
) -> None:
    from helpers import TASKS

    path = make_experiment(rounds=1, task=TASKS / "lying_numpy.py", extra={"strategy": {"min_fit_clients": 3}})
    fake = "\x1b[2J\x1b[H\x1b[32m  round 99 done in 0.1s\x1b[0m\r\n\x9b1A\u202e"
    (path.parent / "data" / "b" / "RAISE_TEXT").write_text(fake)
    result = cli("run", path)  # b fails, so the round fails: its reason is in the error line too
    assert result.exit_code == 7
    control = [c for c in result.stderr + result.stdout if ord(c) < 32 and c != "\n" or 0x7F <= ord(c) < 0xA0]
    assert control == [] and "\u202e" not in result.stderr
    assert "RuntimeError: [2J[H[32m round 99 done in 0.1s[0m 1A" in " ".join(result.stderr.split())
    run = run_folder(path.parent / "runs")
    (failed,) = [r for r in metrics_of(run) if r.get("silo") == "b"]
    assert failed["failure"].startswith("RuntimeError: [2J[H[32m round 99 done in 0.1s[0m 1A (at ")


def test_resume_from_a_damaged_checkpoint_names_it_and_the_one_before_resumes(
    cli, make_experiment, run_folder
) -> None:
    from safetensors.numpy import load_file as raw_load
    from safetensors.numpy import save_file as raw_save

    from fedsilo.wire.arrays import Damaged, _raw_metadata, written_digest

    straight = make_experiment(folder="straight", rounds=4)
    run_ok(cli, straight)
    full = run_folder(straight.parent / "runs")
    assert written_digest(full / "model.safetensors") is not None  # the final model has its digest too

    stopped = make_experiment(folder="stopped", rounds=3)
    run_ok(cli, stopped)
    part = run_folder(stopped.parent / "runs")
    damaged = part / "checkpoints" / "round_0003.safetensors"
    arrays, meta = raw_load(str(damaged)), _raw_metadata(damaged)
    arrays["model/w"] = arrays["model/w"].copy()
    arrays["model/w"][0, 0] = 1000.0  # one weight, in a file that is still valid safetensors
    raw_save(arrays, str(damaged), metadata=meta)

    result = cli("run", "--resume", part, "--rounds", "4")
    assert result.exit_code == 8 and "Traceback" not in result.stderr
    line = " ".join(result.stderr.split())
    assert f"checkpoint {damaged} is damaged" in line and "delete it to resume from the one before" in line

    damaged.unlink()
    run_ok(cli, "--resume", part, "--rounds", "4")
    assert_same_model(model_of(part), model_of(full))
    raw_save(arrays, str(part / "model.safetensors"), metadata=_raw_metadata(part / "model.safetensors"))
    with pytest.raises(Damaged):
        model_of(part)  # fedsilo.load_file checks the final model's digest as well
