"""Logging a run to MLflow, so that ``mlflow ui`` shows every experiment beside the others.

An observer of the server loop: the experiment's config becomes the run's parameters; each round,
the server's and the federated metrics (``server.accuracy``, ``federated.worst_accuracy``) and each
silo's (``silo.<name>.accuracy``, ``silo.<name>.train_loss``) are logged with ``step=round``; at the
end the final model, ``summary.json`` and ``report.html`` become artifacts. Metrics are sent once
per round in one batch (a remote server is not called once per value).

``mlflow`` is imported only here, and only when tracking is on (``pip install 'fedsilo[mlflow]'``).
``tracking.mlflow: true`` logs to ``mlruns/`` beside the output folder (an sqlite database and artifacts:
MLflow's file-only store is frozen and refuses new runs by default); a folder path does the same
there; anything with a scheme (``http://...``, ``sqlite:///...``, ``databricks``) is used as given.

``mlflow.json`` in the run folder records the MLflow run and the last round logged, so
``fedsilo run --resume`` continues the same MLflow run and logs each round once.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError
from fedsilo.tracking.rows import MetricRow
from fedsilo.wire.files import dumps, write_atomic
from fedsilo.wire.messages import EvaluateRes, Failure, FitRes

STATE = "mlflow.json"
ARTIFACTS = ("model.safetensors", "summary.json", "report.html", "config.json")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a parameter's value
MAX_LISTED_ITEMS = 100  # longer lists of named items (silos) are logged as their count
BATCH = 1000  # MLflow's limit on metrics per log_batch call
log = logging.getLogger("fedsilo.tracking")


def require_mlflow() -> Any:
    """The ``MlflowClient`` class, or a one-line error saying what to install."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(
            "tracking.mlflow is set but MLflow is not installed", "pip install 'fedsilo[mlflow]'"
        ) from None
    return MlflowClient


def is_uri(setting: str) -> bool:
    """A tracking URI (``http://``, ``sqlite:///``, ``databricks``...) rather than a local folder."""
    return ":" in setting or setting == "databricks"


def resolve_target(setting: bool | str, output: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment or None for the server's default)."""
    if isinstance(setting, str) and is_uri(setting):
        return setting, None
    folder = (Path(output).resolve().parent / "mlruns" if setting is True else Path(str(setting))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as ``section.key`` parameters; lists of named items keyed by name (``silos.a.data``)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            if len(value) > MAX_LISTED_ITEMS:  # 10,000 silos: a count, not 20,000 parameters
                out[f"{name}.count"] = str(len(value))
                continue
            for i, item in enumerate(value):
                label = item.get("name", i)
                out.update(flatten_params({k: v for k, v in item.items() if k != "name"}, f"{name}.{label}."))
            if all("name" in v for v in value):
                out[name] = ",".join(str(v["name"]) for v in value)
        else:
            text = json.dumps(value) if isinstance(value, list) else str(value)
            out[name] = text[:MAX_PARAM_LENGTH]
    return out


def row_metrics(row: MetricRow) -> dict[str, float]:
    """A metrics row as MLflow metric names and values (text such as ``worst_silo`` is left out)."""
    if row.scope == "silo":
        prefix = f"silo.{row.silo}."
        if row.failed:
            return {f"{prefix}failed": 1.0}
    else:
        prefix = f"{row.scope}."
    fit = row.phase == "fit"
    out = {}
    for key, value in row.values.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[prefix + ("train_examples" if fit and key == "num_examples" else key)] = float(value)
    return out


@contextmanager
def _quiet_store() -> Iterator[None]:
    """MLflow's sqlite store triggers one SQLAlchemy 2.1 deprecation warning; that one only is hidden."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy is deprecated")
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
        logging.getLogger("alembic").setLevel(logging.WARNING)
        yield


class MlflowTracker:
    """Observer that logs to one MLflow run; ``finish`` adds the artifacts and closes the run."""

    def __init__(self, client: Any, run_id: str, run_dir: Path, tracking_uri: str, last_round: int) -> None:
        self.client, self.run_id, self.run_dir = client, run_id, Path(run_dir)
        self.tracking_uri = tracking_uri
        self.last_round = last_round
        self._pending: list[tuple[int, dict[str, float], int]] = []

    @classmethod
    def start(
        cls,
        run_dir: Path,
        setting: bool | str,
        output: Path,
        experiment: str,
        params: Mapping[str, Any],
        history: Iterable[MetricRow] = (),
    ) -> MlflowTracker:
        """Open (or, for a resumed run folder, reopen) the MLflow run and log what is not there yet.

        ``history`` is the run folder's metrics so far: rounds that a previous attempt did not get
        to log (it stopped between a checkpoint and the end of the round) are logged now.
        """
        client_class = require_mlflow()
        from mlflow.exceptions import MlflowException

        uri, artifact_location = resolve_target(setting, output)
        run_dir = Path(run_dir)
        try:
            with _quiet_store():
                client = client_class(uri)
                previous = _read_state(run_dir)
                run_id, last_round, resumed = None, -1, False
                if previous.get("tracking_uri") == uri:
                    try:
                        run_id = client.get_run(previous["run_id"]).info.run_id
                        last_round, resumed = int(previous.get("last_round", -1)), True
                        client.update_run(run_id, status="RUNNING")
                    except MlflowException:
                        run_id = None
                if run_id is None:
                    found = client.get_experiment_by_name(experiment)
                    exp_id = found.experiment_id if found else client.create_experiment(experiment, artifact_location)
                    tags = {"fedsilo.run_dir": str(run_dir)}
                    run_id = client.create_run(exp_id, run_name=run_dir.name, tags=tags).info.run_id
                tracker = cls(client, run_id, run_dir, uri, last_round)
                tracker._log_params(flatten_params(params), resumed)
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"MLflow at {uri}: {first}", "check tracking.mlflow in the experiment YAML") from None
        tracker._save_state()
        for row in history:
            tracker._add(row, int((row.time if row.time is not None else time.time()) * 1000))
        tracker._flush()
        return tracker

    def _log_params(self, params: Mapping[str, str], resumed: bool) -> None:
        """New parameters are logged; on resume, a changed one (MLflow keeps the first) becomes a tag."""
        from mlflow.entities import Param, RunTag

        logged = self.client.get_run(self.run_id).data.params if resumed else {}
        new = [Param(k, v) for k, v in params.items() if k not in logged]
        changed = [RunTag(f"resumed.{k}", v) for k, v in params.items() if k in logged and logged[k] != v]
        for i in range(0, max(len(new), len(changed)), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100], tags=changed[i : i + 100])

    def _add(self, row: MetricRow, millis: int | None = None) -> None:
        if row.round > self.last_round:
            self._pending.append((row.round, row_metrics(row), millis or int(time.time() * 1000)))

    def _flush(self) -> None:
        """Send the buffered rounds in batches; on an MLflow error keep them for the next try."""
        from mlflow.entities import Metric

        if not self._pending:
            return
        failures: dict[int, int] = {}
        metrics = []
        for rnd, values, millis in self._pending:
            metrics += [Metric(k, v, millis, rnd) for k, v in values.items()]
            failed = sum(1 for k in values if k.endswith(".failed"))
            failures[rnd] = failures.get(rnd, 0) + failed
        now = int(time.time() * 1000)
        metrics += [Metric("failures", float(n), now, rnd) for rnd, n in failures.items() if rnd > 0]
        try:
            for i in range(0, len(metrics), BATCH):
                self.client.log_batch(self.run_id, metrics=metrics[i : i + BATCH])
        except Exception as exc:  # a tracking server's hiccup must not stop hours of training
            log.warning("MLflow logging failed (will retry next round): %s", str(exc).splitlines()[0])
            return
        self.last_round = max(self.last_round, *(rnd for rnd, _, _ in self._pending))
        self._pending.clear()
        self._save_state()

    def _save_state(self) -> None:
        state = {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "last_round": self.last_round}
        write_atomic(self.run_dir / STATE, dumps(state, indent=2))

    # Observer interface -------------------------------------------------------------
    def on_round_start(self, round: int, silos: Sequence[str]) -> None:
        pass

    def on_reply(self, round: int, phase: str, reply: FitRes | EvaluateRes | Failure) -> None:
        pass

    def on_metrics(self, row: MetricRow) -> None:
        self._add(row)

    def on_round_end(self, round: int, rows: Sequence[MetricRow]) -> None:
        self._flush()

    def finish(self, status: str = "FINISHED") -> None:
        """Log what is left, the run folder's final files (when finished), and close the MLflow run."""
        if status != "FINISHED":  # the run is failing already: its own error is the one to show
            try:
                self._flush()
                self.client.set_terminated(self.run_id, status=status)
            except Exception as exc:
                log.warning("could not mark the MLflow run %s: %s", status, str(exc).splitlines()[0])
            return
        self._flush()
        for name in ARTIFACTS:
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, status=status)


def _read_state(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}
