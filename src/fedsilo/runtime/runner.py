"""Running an experiment in simulation, from a fresh start or from a run folder's last checkpoint.

This wires the pieces together: prepare data if asked, check the plan, open the run folder,
build the initial model from the seed, start the worker pool, run the server loop, and write the
final model and summary (with baselines when asked).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsilo.arrays import ArrayDict, Layout
from fedsilo.data.split import SplitReport, split_dataset
from fedsilo.errors import ConfigError, RunDirError
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.plan import build_plan, make_strategy
from fedsilo.experiment.privacy_plan import codec_of, privacy_fit_config, privacy_summary
from fedsilo.experiment.task import Task
from fedsilo.messages import EvaluateIns, EvaluateRes, FitIns, FitRes
from fedsilo.runtime.evaluation import CentralEvaluator, central_evaluator
from fedsilo.runtime.simulation import POOLED, WorkerPool

if TYPE_CHECKING:
    from fedsilo.runtime.ray import RayTransport
from fedsilo.server.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from fedsilo.server.loop import LoopSettings, Observer, ServerLoop
from fedsilo.server.secure_aggregation import SecAggSettings
from fedsilo.silo.agent import SiloAgent
from fedsilo.tracking.mlflow import MlflowTracker, require_mlflow
from fedsilo.tracking.report import REPORT, write_report
from fedsilo.tracking.run_dir import RunDir
from fedsilo.transport.base import Transport
from fedsilo.transport.inproc import InProcessTransport

#: Builds the transport of a runtime other than simulation, once the run folder exists (kits go in it).
TransportFactory = Callable[[RunDir], Transport]


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    parameters: ArrayDict
    summary: dict[str, Any]


def prepare_data(config: ExperimentConfig) -> SplitReport | None:
    """Split the dataset into the silos' folders if the experiment says how and they are missing."""
    p = config.prepare
    if p is None or all(s.data.exists() for s in config.silos):
        return None
    return split_dataset(
        p.dataset,
        p.out,
        [s.name for s in config.silos],
        method=p.method,
        alpha=p.alpha,
        sizes=p.sizes,
        groups_key=p.groups_key,
        test_fraction=p.test_fraction,
        seed=p.seed,
        column=p.column,
        label_column=p.label_column,
        image_size=p.image_size,
    )


def worker_count(config: ExperimentConfig, silos: int) -> int:
    if config.runtime.workers == "auto":
        return max(1, min(os.cpu_count() or 1, silos))
    return int(config.runtime.workers)


def start_pool(config: ExperimentConfig, with_pooled: bool) -> WorkerPool | RayTransport | None:
    """Start the simulation's workers (processes, or Ray actors) now: they load the task while the server sets up."""
    folders: dict[str, Sequence[Path]] = {s.name: [s.data] for s in config.silos}
    pool: WorkerPool | RayTransport
    if config.runtime.kind == "ray":
        from fedsilo.runtime.ray import RayTransport

        r = config.runtime
        pool = RayTransport(config.task, folders, config.seed, r.workers, config.train.device, r.address)
    else:
        workers = worker_count(config, len(folders))
        if workers == 0:
            return None
        cache = int(config.runtime.cache_mb * (1 << 20))
        pool = WorkerPool(config.task, folders, None, config.seed, workers, config.train.device, cache_bytes=cache)
    if with_pooled:
        pool.add_pooled_silo()
    return pool


def in_process_transport(config: ExperimentConfig, task: Task, with_pooled: bool) -> InProcessTransport:
    """Every silo in this process, one after another (``runtime.workers: 0``): simplest to debug."""
    folders: dict[str, Sequence[Path]] = {s.name: [s.data] for s in config.silos}
    silos = list(folders)
    if with_pooled:
        folders[POOLED] = [s.data for s in config.silos]
    device = config.train.device
    return InProcessTransport(
        {
            name: SiloAgent(name, partial(task.make_client, f, config.seed, device), config.seed)
            for name, f in folders.items()
        },
        sampleable=silos,
    )


def open_run(
    config: ExperimentConfig, source_text: str, resume: Path | None, local_silos: bool = True
) -> tuple[RunDir, Checkpoint | None]:
    """A new run folder (after checking the plan), or the resumed one and its last checkpoint.

    ``local_silos=False`` (a deployed server) skips the silos' data folders: they are on other machines.
    """
    if resume is None:
        build_plan(config, silo_data=local_silos).raise_if_invalid()
        run = RunDir.create(config.output, config.name, source_text)
        run.write_config(config.model_dump(mode="json"))
        return run, None
    run = RunDir.open(resume)
    ckpt_path = latest_checkpoint(run.checkpoints)
    if ckpt_path is None:
        raise RunDirError(f"{resume} has no checkpoint to resume from", "start a new run instead")
    ckpt = load_checkpoint(ckpt_path)
    run.truncate_metrics(ckpt.round)
    run.write_config(config.model_dump(mode="json"))
    return run, ckpt


def run_experiment(
    config: ExperimentConfig,
    source_text: str,
    observers: Sequence[Observer] = (),
    resume: Path | None = None,
    baselines: bool = False,
    transport_factory: TransportFactory | None = None,
    local_silos: bool = True,
) -> RunResult:
    """Run (or resume) ``config``; returns the run folder, final model and summary.

    Without ``transport_factory`` the silos are simulated; with it, they are reached through the
    transport it builds (separate processes or machines), and ``local_silos=False`` says their
    data is not on this machine.
    """
    started = time.monotonic()
    if transport_factory is not None and baselines:
        raise ConfigError(
            "--baselines needs the simulation runtime: the centralized baseline pools every silo's data",
            "run the baselines with `--runtime simulation`",
        )
    if config.tracking.mlflow:
        require_mlflow()  # before any work: a missing extra is a one-line error
    secagg = secagg_settings(config)
    if resume is None and local_silos:
        prepare_data(config)
    pool = start_pool(config, baselines) if transport_factory is None else None
    run: RunDir | None = None
    transport: Transport | None = pool
    tracker: MlflowTracker | None = None
    try:
        run, ckpt = open_run(config, source_text, resume, local_silos)
        if config.tracking.mlflow:
            tracker = MlflowTracker.start(
                run.path, config.tracking.mlflow, config.output, config.tracking.experiment or config.name,
                config.model_dump(mode="json"), run.metrics(),
            )  # fmt: skip
        task = Task.load(config.task)
        initial = task.initial_parameters(config.seed)
        if ckpt is not None:
            params, state, start = ckpt.parameters, ckpt.state, ckpt.round + 1
        else:
            params, state, start = initial, make_strategy(config).initial_state(initial), 1
        evaluator = central_evaluator(config, task, run)
        if transport_factory is not None:
            transport = transport_factory(run)
        elif isinstance(pool, WorkerPool):
            pool.attach(Layout.of(initial), codec_of(config))
        elif pool is None:
            transport = in_process_transport(config, task, baselines)
        assert transport is not None
        checkpoints = run.checkpoints
        strategy = make_strategy(config)
        loop = ServerLoop(
            transport,
            strategy,
            LoopSettings(
                config.rounds,
                config.seed,
                {**config.fit_config(), **privacy_fit_config(config)},
                config.server.round_timeout_s,
                wait_timeout=config.server.wait_timeout_s,
                failed_rounds_allowed=config.server.failed_rounds_allowed,
                secure_aggregation=secagg,
                evaluate_every=config.server.evaluate_every,
                codec=codec_of(config),
            ),
            central_evaluate=evaluator,
            observers=[run, *observers, *([tracker] if tracker else [])],
            checkpoint=lambda r, p, s: save_checkpoint(checkpoints, r, p, s),
            expected_silos=[s.name for s in config.silos],
        )
        params, state = loop.run(params, state, start)
        base = run_baselines(config, transport, initial, evaluator) if baselines else None
    except BaseException as exc:
        if tracker is not None:
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if transport is not None:
            transport.close()
        if run is not None:
            run.close()

    run.write_model(params, {"rounds": str(config.rounds), "seed": str(config.seed)})
    summary = summarize(config, run, time.monotonic() - started, base)
    summary.update(privacy_summary(strategy, state, run.metrics()))
    if loop.stopped is not None:
        summary["stopped_early"] = loop.stopped
    summary["report"] = str(run.path / REPORT)
    run.write_summary(summary)
    write_report(run.path)
    if tracker is not None:
        tracker.finish()
    return RunResult(run.path, params, summary)


def secagg_settings(config: ExperimentConfig) -> SecAggSettings | None:
    """``privacy.secure_aggregation`` (and, with it, ``privacy.dp`` as silo-side distributed DP) for the loop."""
    sa, dp = config.privacy.secure_aggregation, config.privacy.dp
    if sa is None:
        return None
    try:
        import fedsilo.privacy.secagg  # noqa: F401  (before any training: a missing extra is a one-line error)
    except ImportError as exc:
        raise ConfigError(f"secure aggregation needs cryptography ({exc})", "pip install 'fedsilo[secagg]'") from None
    return SecAggSettings(
        sa.threshold, sa.neighbours, sa.clip, sa.frac_bits, sa.ring_bits, sa.step_timeout_s,
        dp.noise_multiplier if dp is not None else None, dp.clip_norm if dp is not None else 1.0,
    )  # fmt: skip


def run_baselines(
    config: ExperimentConfig, transport: Transport, initial: ArrayDict, evaluator: CentralEvaluator | None
) -> dict[str, Any]:
    """Same total budget as the federated run: every silo alone, and all data pooled in one place.

    Each model trains ``rounds x epochs`` epochs from the same initial model (the learning rate
    follows the same per-round decay), so it sees each of its examples as often as the federated
    model did. Each is scored on the server's test set and on every silo's own test split, which is
    what tells a hospital whether federating helps it. A task with a ``samples`` hook also gets
    each baseline's grid as ``samples/baseline_<silo>.png`` (``baseline_centralized.png``).
    """
    if evaluator is None:
        return {"skipped": "baselines need server.data (a server-side test set) to compare models on"}
    fit_config = {
        **config.fit_config(),
        "epochs": config.rounds * config.train.epochs,
        "epochs_per_round": config.train.epochs,
        "seed": config.seed,
    }
    silos = [s.name for s in config.silos]
    results: dict[str, dict[str, Any]] = {}
    models: dict[str, ArrayDict] = {}
    timeout = config.server.round_timeout_s * config.rounds
    for reply in transport.fit([*silos, POOLED], FitIns(0, initial, fit_config), timeout=timeout):
        if isinstance(reply, FitRes):
            name = "centralized" if reply.silo == POOLED else reply.silo
            loss, metrics = evaluator(config.rounds, reply.parameters, f"baseline_{name}")
            results[reply.silo] = {"loss": loss, **metrics, "train_examples": reply.num_examples}
            models[reply.silo] = {k: v.copy() for k, v in reply.parameters.items()}  # replies are views
        else:
            results[reply.silo] = {"failure": reply.reason}
    for name, params in models.items():
        own = silos if name == POOLED else [name]
        for ev in transport.evaluate(own, EvaluateIns(0, params, {"seed": config.seed}), timeout=timeout):
            if isinstance(ev, EvaluateRes):
                results[name].setdefault("own_test", {})[ev.silo] = {"loss": ev.loss, **ev.metrics}
    return {
        "centralized": results.get(POOLED, {}),
        "local_only": {s: results[s] for s in silos if s in results},
        "epochs": fit_config["epochs"],
    }


def summarize(
    config: ExperimentConfig, run: RunDir, duration: float, baselines: Mapping[str, Any] | None
) -> dict[str, Any]:
    rows = run.metrics()
    last = max((r["round"] for r in rows), default=0)
    # the final model is the last one evaluated (a failed last round kept the model before it)
    evaluated = max((r["round"] for r in rows if r.get("phase") == "evaluate"), default=0)

    def final(scope: str) -> dict[str, Any] | None:
        found = [r for r in rows if r["scope"] == scope and r["round"] == evaluated and r.get("phase") == "evaluate"]
        return {k: v for k, v in found[-1].items() if k not in ("scope", "silo", "phase", "time")} if found else None

    drop = ("round", "scope", "silo", "phase", "time")
    per_silo = {
        r["silo"]: {k: v for k, v in r.items() if k not in drop}
        for r in rows
        if r["scope"] == "silo" and r["round"] == evaluated and r.get("phase") == "evaluate" and "failure" not in r
    }
    failures = [r for r in rows if "failure" in r]
    summary: dict[str, Any] = {
        "name": config.name,
        "rounds": last,
        "seed": config.seed,
        "silos": [s.name for s in config.silos],
        "final": final("server"),
        "federated": final("federated"),
        "per_silo": dict(sorted(per_silo.items())),
        "failures": len(failures),
        "failed_rounds": sorted({r["round"] for r in failures if r["scope"] == "server"}),
        "duration_s": round(duration, 2),
        "run_dir": str(run.path),
    }
    if baselines is not None:
        summary["baselines"] = baselines
    return summary


def load_run_config(run_dir: Path, rounds: int | None = None) -> tuple[ExperimentConfig, str]:
    """The config a run folder was started with (for ``--resume``), optionally with more rounds."""
    run = RunDir.open(run_dir)
    config = ExperimentConfig.model_validate(run.config())
    if rounds is not None:
        config = config.model_copy(update={"rounds": rounds})
    return config, (run.path / "experiment.yaml").read_text()
