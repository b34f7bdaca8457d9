"""Running a plan: the run folder, the server loop over the runtime's transport, the results.

``run(plan, runtime, observers)`` is the same for every runtime: it opens the run folder (or
resumes one from its last checkpoint), asks the runtime for its transport, runs the rounds,
optionally the baselines, and writes the final model, ``summary.json`` and the report. It builds
nothing the plan has built already and never branches on the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedsilo.errors import ConfigError, DiskFull, RunDirError
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.plan import Plan
from fedsilo.runtime.base import Runtime
from fedsilo.runtime.baselines import run_baselines
from fedsilo.runtime.evaluation import central_evaluator
from fedsilo.runtime.summary import privacy_summary, summarize
from fedsilo.server.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from fedsilo.server.loop import LoopResult, Observer, ServerLoop
from fedsilo.tracking.mlflow import MlflowTracker, require_mlflow
from fedsilo.tracking.report import REPORT, write_report
from fedsilo.tracking.run_dir import RunDir
from fedsilo.wire.arrays import ArrayDict


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    parameters: ArrayDict
    summary: dict[str, Any]


def open_run(config: ExperimentConfig, source_text: str, resume: Path | None) -> tuple[RunDir, Checkpoint | None]:
    """A new run folder, or the resumed one and its last checkpoint (metrics after it are dropped)."""
    if resume is None:
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


def load_run_config(run_dir: Path, rounds: int | None = None) -> tuple[ExperimentConfig, str]:
    """The config a run folder was started with (for ``--resume``), optionally with more rounds."""
    run = RunDir.open(run_dir)
    config = ExperimentConfig.model_validate(run.config())
    if rounds is not None:
        config = config.model_copy(update={"rounds": rounds})
    return config, (run.path / "experiment.yaml").read_text()


def resumable(exc: DiskFull, folder: Path) -> DiskFull:
    """``exc`` with how to go on: the checkpoints so far are whole, so the run resumes."""
    return DiskFull(
        exc.message,
        f"{exc.fix}, then continue with `fedsilo run --resume {folder}` "
        f"(a deployment: `fedsilo server --resume {folder} --kit KIT`)",
    )


def run(
    plan: Plan,
    runtime: Runtime,
    observers: Sequence[Observer] = (),
    source_text: str = "",
    resume: Path | None = None,
    baselines: bool = False,
) -> RunResult:
    """Run (or resume) ``plan`` with ``runtime``'s transport; returns the run folder, final model and summary.

    ``runtime`` is closed at the end, whatever happens, and told what ended the run if it failed
    (a networked runtime tells its silos).
    """
    started = time.monotonic()
    config = plan.config
    folder: RunDir | None = None
    tracker: MlflowTracker | None = None
    failure: BaseException | None = None
    try:
        plan.raise_if_invalid()
        if baselines and not plan.silos_here:
            raise ConfigError(
                "--baselines needs the silos' data on this machine: the centralized baseline pools it",
                "run the baselines in simulation: `fedsilo run EXPERIMENT.yaml --baselines`",
            )
        if config.tracking.mlflow:
            require_mlflow()  # before any work: a missing extra is a one-line error
        folder, ckpt = open_run(config, source_text, resume)
        if config.tracking.mlflow:
            tracker = MlflowTracker.start(
                folder.path, config.tracking.mlflow, config.output, config.tracking.experiment or config.name,
                config.model_dump(mode="json"), folder.metrics(),
            )  # fmt: skip
        watchers = [folder, *observers, *([tracker] if tracker else [])]
        result, base = _rounds(plan, runtime, folder, ckpt, watchers, baselines)
    except BaseException as exc:
        failure = exc
        if tracker is not None:
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        if isinstance(exc, DiskFull) and folder is not None:
            raise resumable(exc, folder.path) from None
        raise
    finally:
        runtime.close(failure)
        if folder is not None:
            folder.close()
    assert folder is not None
    return _finish(plan, folder, result, base, time.monotonic() - started, tracker)


def _rounds(
    plan: Plan,
    runtime: Runtime,
    folder: RunDir,
    ckpt: Checkpoint | None,
    observers: Sequence[Observer],
    baselines: bool,
) -> tuple[LoopResult, dict[str, Any] | None]:
    """The server loop over the runtime's transport (then the baselines, on the same transport)."""
    config = plan.config
    _, strategy, loop = plan.parts()
    loop = replace(loop, instructions=replace(loop.instructions, run=folder.path.name))
    if ckpt is not None:
        params, state, start = ckpt.parameters, ckpt.state, ckpt.round + 1
    else:
        params, state, start = plan.initial, strategy.initial_state(plan.initial), 1
    evaluator = central_evaluator(plan, folder)
    transport = runtime.transport(plan, folder)
    checkpoints = folder.checkpoints
    server = ServerLoop(
        transport,
        strategy,
        loop,
        central_evaluate=evaluator,
        observers=observers,
        checkpoint=lambda r, p, s: save_checkpoint(checkpoints, r, p, s),
        expected_silos=[s.name for s in config.silos],
    )
    result = server.run(params, state, start)
    return result, run_baselines(plan, transport, evaluator) if baselines else None


def _finish(
    plan: Plan,
    folder: RunDir,
    result: LoopResult,
    base: dict[str, Any] | None,
    duration: float,
    tracker: MlflowTracker | None,
) -> RunResult:
    """The final model, ``summary.json`` and the report in the run folder."""
    config = plan.config
    _, strategy, _ = plan.parts()
    folder.write_model(result.parameters, {"rounds": str(config.rounds), "seed": str(config.seed)})
    summary = summarize(config, folder, duration, base)
    summary.update(privacy_summary(strategy, result.state, folder.metrics()))
    if result.stopped is not None:
        summary["stopped_early"] = result.stopped
    summary["report"] = str(folder.path / REPORT)
    folder.write_summary(summary)
    write_report(folder.path)
    if tracker is not None:
        tracker.finish()
    return RunResult(folder.path, result.parameters, summary)
