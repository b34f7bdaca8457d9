"""The job graph, built and checked offline: what ``fedsilo validate`` prints.

``build_plan`` imports the task, builds the model once, opens the silos' data and checks the
strategy's minimums against the silos, collecting every problem rather than stopping at the
first, so that one ``validate`` shows everything to fix.

With many silos (more than ``FULL_CHECK_SILOS``) it opens only the first ``OPENED_SILOS`` silos'
data and checks that every other folder exists: reading 10,000 silos' files would cost what
the run itself avoids, since a silo's data is loaded only when a round samples it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from fedsilo.client.numpy import num_examples
from fedsilo.data.datasets import DATASETS, find_dataset
from fedsilo.data.loaders import check_silo_folder
from fedsilo.errors import DataError, FedsiloError, PlanError
from fedsilo.experiment import strategy_config as sc
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.privacy_plan import privacy_problems, projected_epsilon, with_privacy
from fedsilo.experiment.task import Task
from fedsilo.server.registry import sample_count
from fedsilo.strategy.aggregate import krum_min_updates, trim_count
from fedsilo.strategy.base import Sampling, Strategy
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.strategy.fedopt import FedOpt
from fedsilo.strategy.fedprox import FedProx
from fedsilo.strategy.robust import Robust

FULL_CHECK_SILOS = 100
OPENED_SILOS = 10
NAMED_MISSING = 5  # missing folders named in the problem line; the rest are counted
NOT_OPENED = "not opened (read when sampled)"


@dataclass(frozen=True)
class SiloPlan:
    name: str
    folder: Path
    train_examples: int | None
    test_examples: int | None
    note: str = ""


@dataclass(frozen=True)
class Plan:
    config: ExperimentConfig
    framework: str | None = None
    num_parameters: int = 0
    num_arrays: int = 0
    silos: tuple[SiloPlan, ...] = ()
    server_test_examples: int | None = None
    fit_per_round: int = 0
    evaluate_per_round: int = 0
    problems: tuple[str, ...] = field(default=())
    epsilon: tuple[float, int] | None = None  # central DP: epsilon after the rounds, and rounds the target allows

    def raise_if_invalid(self) -> None:
        if self.problems:
            raise PlanError(f"{len(self.problems)} problem(s): " + " | ".join(self.problems))


def make_strategy(config: ExperimentConfig) -> Strategy:
    """The strategy object the ``strategy:`` section describes, inside central DP if ``privacy.dp`` asks."""
    return with_privacy(config, _strategy(config))


def _strategy(config: ExperimentConfig) -> Strategy:
    s = config.strategy
    sampling = Sampling(
        s.fraction_fit, s.fraction_evaluate, s.min_fit_clients, s.min_evaluate_clients, s.min_available_clients
    )
    if isinstance(s, sc.FedProxConfig):
        return FedProx(s.mu, sampling)
    if isinstance(s, sc.FedAvgMConfig):
        return FedOpt(s.name, sampling, eta=s.eta, beta1=s.momentum, mean_only=tuple(s.mean_only))
    if isinstance(s, sc.FedAdagradConfig):
        return FedOpt(s.name, sampling, eta=s.eta, beta1=s.beta1, tau=s.tau, mean_only=tuple(s.mean_only))
    if isinstance(s, sc.FedAdamConfig | sc.FedYogiConfig):
        return FedOpt(
            s.name, sampling, eta=s.eta, beta1=s.beta1, beta2=s.beta2, tau=s.tau, mean_only=tuple(s.mean_only)
        )
    if isinstance(s, sc.MedianConfig):
        return Robust(s.name, sampling)
    if isinstance(s, sc.TrimmedMeanConfig):
        return Robust(s.name, sampling, beta=s.beta)
    if isinstance(s, sc.KrumConfig):
        return Robust(s.name, sampling, byzantine=s.byzantine)
    if isinstance(s, sc.MultiKrumConfig):
        return Robust(s.name, sampling, byzantine=s.byzantine, num_selected=s.num_selected)
    return FedAvg(sampling)


def _count(task: Task | None, folder: Path, split: str) -> int | None:
    """Samples in one split of a folder; opens the data without training on it.

    Without a task (it failed to load) only the folder's existence can be checked.
    """
    if task is None:
        if not folder.exists():
            raise DataError(
                f"data folder {folder} does not exist", "run `fedsilo data split` or fix the path in the YAML"
            )
        return None
    if getattr(task.module, "load_data", None) is None:
        return check_silo_folder(folder, (split,))[split]
    return num_examples(task.load_data([folder], split))


def _strategy_problems(config: ExperimentConfig) -> list[str]:
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
    return problems + _robust_problems(config.strategy, sample_count(n, s.fraction_fit, s.min_fit_clients))


def _robust_problems(s: sc.StrategyConfig, fit: int) -> list[str]:
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


def build_plan(config: ExperimentConfig, silo_data: bool = True) -> Plan:
    """The checked plan; ``silo_data=False`` (a deployed server) does not look for the silos' folders."""
    problems = _strategy_problems(config)
    task: Task | None = None
    framework, model_params = None, {}
    try:
        task = Task.load(config.task)
        model = task.build_model(config.seed)
        framework = task.framework_of(model)
        model_params = task.parameters_of(model)
    except FedsiloError as exc:
        problems.insert(0, exc.one_line())
        task = None
    hooks = [name for name in ("server_evaluate", "samples") if task is not None and task.hook(name)]
    if hooks and config.server.data is None:
        problems.append(
            f"the task defines {' and '.join(f'{h}()' for h in hooks)}, which the server runs on server.data, "
            "but server.data is not set -> set server.data to a folder with a test split"
        )

    prepare_note = _prepare_note(config, problems) if silo_data else None
    needs_test = config.strategy.fraction_evaluate > 0
    opened = len(config.silos) if len(config.silos) <= FULL_CHECK_SILOS else OPENED_SILOS
    silos = []
    missing: list[str] = []
    for i, silo in enumerate(config.silos):
        if not silo_data:
            silos.append(SiloPlan(silo.name, silo.data, None, None, "on the silo's machine"))
            continue
        if i >= opened and prepare_note is None:
            exists = silo.data.is_dir()
            if not exists:
                missing.append(silo.name)
            silos.append(SiloPlan(silo.name, silo.data, None, None, NOT_OPENED if exists else "missing"))
            continue
        if prepare_note is not None and not silo.data.exists():
            silos.append(SiloPlan(silo.name, silo.data, None, None, prepare_note))
            continue
        try:
            train = _count(task, silo.data, "train")
            test = _count(task, silo.data, "test") if needs_test else None
            if train == 0:
                problems.append(
                    f"silo '{silo.name}': {silo.data} has no training samples -> re-split the data or remove the silo"
                )
            silos.append(SiloPlan(silo.name, silo.data, train, test))
        except FedsiloError as exc:
            problems.append(f"silo '{silo.name}': {exc.one_line()}")
            silos.append(SiloPlan(silo.name, silo.data, None, None, "unreadable"))

    if missing:
        more = f" and {len(missing) - NAMED_MISSING} more" if len(missing) > NAMED_MISSING else ""
        problems.append(
            f"{len(missing)} silos' data folders do not exist ({', '.join(missing[:NAMED_MISSING])}{more})"
            " -> run `fedsilo data split` or fix `silos:` in the YAML"
        )

    server_test = None
    if config.server.data is not None and not (prepare_note is not None and not config.server.data.exists()):
        try:
            server_test = _count(task, config.server.data, "test")
        except FedsiloError as exc:
            problems.append(f"server.data: {exc.one_line()}")

    problems.extend(privacy_problems(config, framework))
    s, n = config.strategy, len(config.silos)
    return Plan(
        config,
        framework=framework,
        num_parameters=sum(int(v.size) for v in model_params.values()),
        num_arrays=len(model_params),
        silos=tuple(silos),
        server_test_examples=server_test,
        fit_per_round=sample_count(n, s.fraction_fit, s.min_fit_clients),
        evaluate_per_round=sample_count(n, s.fraction_evaluate, s.min_evaluate_clients)
        if s.fraction_evaluate > 0
        else 0,
        problems=tuple(problems),
        epsilon=projected_epsilon(config) if not any(p.startswith("privacy.dp") for p in problems) else None,
    )


def _prepare_note(config: ExperimentConfig, problems: list[str]) -> str | None:
    """When ``prepare:`` will make missing data folders: a note for them (the dataset is found once)."""
    if config.prepare is None or all(s.data.exists() for s in config.silos):
        return None
    source = Path(config.prepare.dataset)
    if config.prepare.dataset not in DATASETS and source.exists():  # a file or an image release folder
        return f"split from {source.name} on first run"
    try:
        return f"split from {find_dataset(config.prepare.dataset).name} on first run"
    except FedsiloError as exc:
        problems.append(f"prepare.dataset: {exc.one_line()}")
        return "dataset not found"
