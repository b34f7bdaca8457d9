"""From an experiment to a finished run in one call: the runtime its YAML names, the plan, the run.

``runtime_for`` is the one place a runtime is chosen by name (``runtime.kind``); the deployed
server (``fedsilo server``) builds its :class:`~fedsilo.runtime.deploy.DeploymentRuntime` itself.
The runtime is started before the plan is built, so a simulation's workers import the task while
the server imports it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fedsilo.errors import ConfigError
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.plan import build_plan
from fedsilo.runtime.base import Runtime
from fedsilo.runtime.prepare import prepare_data
from fedsilo.runtime.run import RunResult, run
from fedsilo.server.loop import Observer

RUNTIMES = ("simulation", "processes", "ray")


def runtime_for(
    config: ExperimentConfig, baselines: bool = False, notify: Callable[[str], None] | None = None
) -> Runtime:
    """The runtime ``config.runtime.kind`` names, started (``notify`` gets the processes runtime's events)."""
    kind = config.runtime.kind
    if baselines and kind == "processes":
        raise ConfigError(
            "--baselines needs the simulation runtime: the centralized baseline pools every silo's data",
            "run the baselines with `--runtime simulation`",
        )
    if kind == "processes":
        from fedsilo.runtime.processes import ProcessesRuntime  # grpc only now

        return ProcessesRuntime(config, notify)
    if kind == "ray":
        from fedsilo.runtime.simulation_runtime import RayRuntime

        return RayRuntime(config, baselines)
    from fedsilo.runtime.simulation_runtime import SimulationRuntime

    return SimulationRuntime(config, baselines)


def run_experiment(
    config: ExperimentConfig,
    source_text: str = "",
    observers: Sequence[Observer] = (),
    resume: Path | None = None,
    baselines: bool = False,
    notify: Callable[[str], None] | None = None,
) -> RunResult:
    """Run (or resume) ``config`` in the runtime it names; returns the run folder, final model and summary."""
    if resume is None:
        prepare_data(config)
    runtime = runtime_for(config, baselines, notify)
    try:
        plan = build_plan(config)
    except BaseException:
        runtime.close()
        raise
    return run(plan, runtime, observers, source_text, resume, baselines)
