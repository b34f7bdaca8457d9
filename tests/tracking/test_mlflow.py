"""tracking/mlflow.py: what a run logs to MLflow, read back from a real sqlite store in tmp_path."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from fedsilo.errors import ConfigError
from fedsilo.experiment.config import parse_config
from fedsilo.tracking.mlflow import flatten_params, resolve_target, row_metrics
from fedsilo.tracking.rows import MetricRow

# MLflow's sqlite store, on SQLAlchemy 2.1, warns once about its own use of a deprecated loader.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")


def test_flatten_params_by_hand() -> None:
    config = {
        "name": "exp",
        "silos": [{"name": "a", "data": "/d/a"}, {"name": "b", "data": "/d/b"}],
        "train": {"lr": 0.5, "epochs": 1},
        "server": {"data": None},
        "prepare": {"sizes": [2, 3]},
    }
    assert flatten_params(config) == {
        "name": "exp",
        "silos.a.data": "/d/a",
        "silos.b.data": "/d/b",
        "silos": "a,b",
        "train.lr": "0.5",
        "train.epochs": "1",
        "server.data": "None",
        "prepare.sizes": "[2, 3]",
    }


def test_row_metrics_names_by_scope_and_phase() -> None:
    def metrics(**row: object) -> dict[str, float]:
        return row_metrics(MetricRow.from_json(row))

    assert metrics(round=1, scope="server", silo=None, phase="evaluate", loss=0.5) == {"server.loss": 0.5}
    fed = {"loss": 1.0, "worst_accuracy": 0.4, "worst_silo": "b", "time": 9.0}
    assert metrics(round=2, scope="federated", phase="evaluate", **fed) == {
        "federated.loss": 1.0,
        "federated.worst_accuracy": 0.4,
    }
    fit = metrics(round=1, scope="silo", silo="a", phase="fit", num_examples=12, train_loss=0.3)
    assert fit == {"silo.a.train_examples": 12.0, "silo.a.train_loss": 0.3}
    ev = metrics(round=1, scope="silo", silo="a", phase="evaluate", num_examples=4, accuracy=0.75)
    assert ev == {"silo.a.num_examples": 4.0, "silo.a.accuracy": 0.75}
    failed = metrics(round=1, scope="silo", silo="c", phase="fit", failure="boom", failure_kind="error")
    assert failed == {"silo.c.failed": 1.0}


def test_resolve_target(tmp_path: Path) -> None:
    uri, artifacts = resolve_target(True, tmp_path / "runs")  # beside the run folders, not among them
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert artifacts == (tmp_path / "mlruns" / "artifacts").as_uri()
    assert (tmp_path / "mlruns").is_dir()
    assert (
        resolve_target(str(tmp_path / "elsewhere"), tmp_path)[0] == f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    )
    assert resolve_target("http://127.0.0.1:5000", tmp_path) == ("http://127.0.0.1:5000", None)
    assert resolve_target("databricks", tmp_path) == ("databricks", None)


def test_tracking_config(tmp_path: Path) -> None:
    base = {"name": "e", "task": "t.py", "silos": [{"name": "a", "data": "d"}], "rounds": 1}
    assert parse_config(base, tmp_path).tracking.mlflow is False
    folder = parse_config({**base, "tracking": {"mlflow": "mlruns"}}, tmp_path).tracking
    assert folder.mlflow == str((tmp_path / "mlruns").resolve()) and folder.experiment is None
    uri = parse_config({**base, "tracking": {"mlflow": "sqlite:///x.db", "experiment": "x"}}, tmp_path).tracking
    assert uri.mlflow == "sqlite:///x.db" and uri.experiment == "x"
    with pytest.raises(ConfigError) as info:
        parse_config({**base, "tracking": {"mlfow": True, "mlflow": " "}}, tmp_path)
    assert "tracking.mlfow: unknown key" in info.value.message  # both problems at once
    assert "tracking.mlflow: use true, a folder or a tracking URI" in info.value.message


def read_back(uri: str, experiment: str) -> tuple[Any, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_run_logs_params_metrics_and_artifacts_and_resume_continues_it(
    cli, make_experiment, run_folder, metrics_of
) -> None:
    pytest.importorskip("mlflow")
    path = make_experiment(rounds=2, extra={"tracking": {"mlflow": True, "experiment": "fed-test"}})
    result = cli("run", path, "--quiet")
    assert result.exit_code == 0, result.stderr
    run_dir = run_folder(path.parent / "runs")
    uri = f"sqlite:///{path.parent / 'mlruns' / 'mlflow.db'}"
    client, run = read_back(uri, "fed-test")
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == run.info.run_id

    params = run.data.params
    assert params["rounds"] == "2" and params["train.lr"] == "0.5" and params["silos"] == "a,b,c"
    assert params["silos.a.data"] == str((path.parent / "data" / "a").resolve())
    rows = metrics_of(run_dir)
    by = {(r["round"], r["scope"], r["silo"], r["phase"]): r for r in rows}
    rid = run.info.run_id
    assert history(client, rid, "server.loss") == [(r, by[(r, "server", None, "evaluate")]["loss"]) for r in (0, 1, 2)]
    assert history(client, rid, "silo.b.accuracy") == [
        (r, by[(r, "silo", "b", "evaluate")]["accuracy"]) for r in (1, 2)
    ]
    assert history(client, rid, "silo.c.train_examples") == [(1, 36.0), (2, 36.0)]
    assert history(client, rid, "federated.worst_accuracy") == [
        (r, by[(r, "federated", None, "evaluate")]["worst_accuracy"]) for r in (1, 2)
    ]
    assert history(client, rid, "failures") == [(1, 0.0), (2, 0.0)]
    artifacts = {a.path for a in client.list_artifacts(rid)}
    assert {"model.safetensors", "summary.json", "report.html", "config.json"} <= artifacts

    resumed = cli("run", "--resume", run_dir, "--rounds", "3", "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    client, run = read_back(uri, "fed-test")  # still one MLflow run
    assert run.info.run_id == rid and run.info.status == "FINISHED"
    assert [step for step, _ in history(client, rid, "server.loss")] == [0, 1, 2, 3]  # each round once
    assert run.data.params["rounds"] == "2" and run.data.tags["resumed.rounds"] == "3"


def test_tracking_switched_on_for_a_resume_logs_the_earlier_rounds_too(
    cli, make_experiment, run_folder, tmp_path: Path
) -> None:
    pytest.importorskip("mlflow")
    path = make_experiment(rounds=1)
    assert cli("run", path, "--quiet").exit_code == 0
    run_dir = run_folder(path.parent / "runs")
    config = json.loads((run_dir / "config.json").read_text())
    config["tracking"] = {"mlflow": str(tmp_path / "store"), "experiment": None}
    (run_dir / "config.json").write_text(json.dumps(config))
    result = cli("run", "--resume", run_dir, "--rounds", "2", "--quiet")
    assert result.exit_code == 0, result.stderr
    client, run = read_back(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", "exp")
    assert [s for s, _ in history(client, run.info.run_id, "server.loss")] == [0, 1, 2]
    assert [s for s, _ in history(client, run.info.run_id, "silo.a.loss")] == [1, 2]


def test_missing_mlflow_is_one_line_before_any_work(cli, make_experiment, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_experiment(rounds=1, extra={"tracking": {"mlflow": True}})
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    result = cli("run", path)
    assert result.exit_code == 5  # a plan problem: `fedsilo validate` finds it too
    assert result.stderr.strip() == (
        "error: tracking.mlflow needs mlflow, which is not installed on this machine -> pip install 'fedsilo[mlflow]'"
    )
    assert "tracking.mlflow needs mlflow" in cli("validate", path).stderr
    assert not (path.parent / "runs").exists()
