"""The plan's cross-field rules: what each section allows alone but the combination cannot run.

Each problem is one line naming the YAML keys involved and the fix, so that ``fedsilo validate``
shows everything at once, offline, before any silo trains. The rules need what the schema cannot
see: the number of silos, the task's framework, which extras are installed.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

from fedsilo.experiment import strategy_registry as sc
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.server.registry import sample_count
from fedsilo.strategy.aggregate import krum_min_updates, trim_count


def strategy_problems(config: ExperimentConfig) -> list[str]:
    """Minimums against the number of silos, and what a robust rule needs from the updates of a round."""
    s, n = config.strategy, len(config.silos)
    problems = []
    for key in ("min_fit_clients", "min_available_clients") + (
        ("min_evaluate_clients",) if s.fraction_evaluate > 0 else ()
    ):
        value = getattr(s, key)
        if value > n:
            problems.append(
                f"strategy.{key}={value} but the experiment has {n} silos -> lower it to at most {n} or add silos"
            )
    return problems + robust_problems(config.strategy, sample_count(n, s.fraction_fit, s.min_fit_clients))


def robust_problems(s: sc.StrategyBase, fit: int) -> list[str]:
    """What a robust rule needs from the ``fit`` updates a round gets (all silos answering)."""
    per_round = f"{fit} silos train per round"
    if isinstance(s, sc.MedianConfig) and fit < 3:
        return [f"strategy median: {per_round}, and a median of fewer than 3 is a mean -> use 3 or more silos"]
    if isinstance(s, sc.TrimmedMeanConfig) and trim_count(fit, s.beta) == 0:
        fix = f"raise beta to {math.ceil(1000 / fit) / 1000:g} or add silos" if fit >= 3 else "use 3 or more silos"
        return [f"strategy.beta={s.beta} trims floor({s.beta} x {fit}) = 0 updates per side when {per_round} -> {fix}"]
    if isinstance(s, sc.KrumConfig | sc.MultiKrumConfig):
        problems = []
        need = krum_min_updates(s.byzantine)
        if fit < need:
            problems.append(
                f"strategy {s.name} with byzantine={s.byzantine} needs n > 2f + 2 = {need - 1} updates per round "
                f"but {per_round} -> lower strategy.byzantine or add silos"
            )
        selected = getattr(s, "num_selected", None)
        if selected is not None and selected > fit - s.byzantine:
            problems.append(
                f"strategy.num_selected={selected} but at most n - f = {fit - s.byzantine} updates can be selected "
                f"when {per_round} -> lower it"
            )
        return problems
    return []


def training_problems(config: ExperimentConfig, framework: str | None) -> list[str]:
    """Strategy extras the local training cannot honour: never train something else silently."""
    problems = []
    if isinstance(config.strategy, sc.FedProxConfig):
        if framework == "sklearn":
            problems.append(
                f"strategy fedprox (strategy.mu={config.strategy.mu}) adds a proximal term to local training, which a "
                "scikit-learn estimator cannot -> use strategy fedavg (or fedadam, fedyogi, ...) with this task"
            )
        if config.privacy.local_dp is not None:
            problems.append(
                f"strategy fedprox (strategy.mu={config.strategy.mu}) cannot be combined with privacy.local_dp: "
                "Opacus rebuilds each gradient from per-sample gradients and would drop the proximal term "
                "-> use another strategy with privacy.local_dp, or remove privacy.local_dp"
            )
    return problems


@dataclass(frozen=True)
class Extra:
    """A feature of the experiment and the packages it needs, on the server or at the silos."""

    setting: str
    modules: tuple[str, ...]
    extra: str
    at_silos: bool


def extras_needed(config: ExperimentConfig, framework: str | None) -> list[Extra]:
    needed = []
    if config.privacy.local_dp is not None:
        needed.append(Extra("privacy.local_dp", ("torch", "opacus", "dp_accounting"), "dp", at_silos=True))
    if config.privacy.dp is not None:
        needed.append(Extra("privacy.dp", ("dp_accounting",), "dp", at_silos=False))
    if config.privacy.secure_aggregation is not None:
        needed.append(Extra("privacy.secure_aggregation", ("cryptography",), "secagg", at_silos=False))
        needed.append(Extra("privacy.secure_aggregation", ("cryptography",), "secagg", at_silos=True))
    if config.runtime.kind == "ray":
        needed.append(Extra("runtime.kind: ray", ("ray",), "ray", at_silos=False))
    if config.runtime.kind == "processes":
        needed.append(Extra("runtime.kind: processes", ("grpc", "cryptography"), "deploy", at_silos=False))
    if config.tracking.mlflow:
        needed.append(Extra("tracking.mlflow", ("mlflow",), "mlflow", at_silos=False))
    if framework == "sklearn":
        needed.append(Extra("the task's scikit-learn model", ("sklearn",), "sklearn", at_silos=True))
    return needed


def missing_extras(config: ExperimentConfig, framework: str | None, silos_here: bool = True) -> list[str]:
    """One problem per feature whose packages are not installed on this machine.

    ``silos_here=False`` (a deployed server) leaves out what only the silos need: they are elsewhere.
    """
    problems, seen = [], set()
    for need in extras_needed(config, framework):
        if need.at_silos and not silos_here:
            continue
        missing = [m for m in need.modules if not installed(m)]
        if missing and (need.setting, tuple(missing)) not in seen:
            seen.add((need.setting, tuple(missing)))
            where = "the silos' machines" if need.at_silos and not silos_here else "this machine"
            problems.append(
                f"{need.setting} needs {', '.join(missing)}, which is not installed on {where} "
                f"-> pip install 'fedsilo[{need.extra}]'"
            )
    return problems


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it: torch alone takes seconds)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing, or a module set to None
        return False
