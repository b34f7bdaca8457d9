"""The plan: everything a run needs, built and checked offline (what ``fedsilo validate`` prints).

``build_plan`` imports the task, builds the initial model once, opens the silos' data, builds the
strategy (inside central DP when ``privacy.dp`` asks), the loop's settings and the instructions
every silo is sent, and checks every cross-field rule, collecting every problem rather than
stopping at the first, so that one ``validate`` shows everything to fix. A run consumes the plan
as it is: nothing is loaded or built twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedsilo.errors import FedsiloError, PlanError
from fedsilo.experiment.checks import missing_extras, strategy_problems, training_problems
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.privacy_plan import privacy_problems, projected_epsilon, with_privacy
from fedsilo.experiment.silo_checks import SiloPlan, check_data
from fedsilo.experiment.strategy_config import UserStrategyConfig
from fedsilo.experiment.user_strategy import user_strategy
from fedsilo.server.registry import sample_count
from fedsilo.server.secure_aggregation import SecAggSettings
from fedsilo.server.settings import LoopSettings
from fedsilo.silo.task import TaskModule
from fedsilo.strategy.base import Strategy
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.codecs import Codec
from fedsilo.wire.instructions import FitInstructions, LocalDP

__all__ = ["Plan", "SiloPlan", "build_plan", "build_strategy", "fit_instructions", "loop_settings", "make_strategy"]


@dataclass(frozen=True)
class Plan:
    """A checked experiment; ``task``, ``strategy`` and ``loop`` are set whenever ``problems`` is empty."""

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
    task: TaskModule | None = None
    initial: ArrayDict = field(default_factory=dict)  # the initial global model, from the seed
    strategy: Strategy | None = None
    loop: LoopSettings | None = None
    silos_here: bool = True  # False for a deployed server: the silos' data is on their machines

    def raise_if_invalid(self) -> None:
        """PlanError with the one problem (its fix after ``->``), or every problem on one line."""
        if len(self.problems) == 1:
            message, _, fix = self.problems[0].partition(" -> ")
            raise PlanError(message, fix or "run `fedsilo validate EXPERIMENT.yaml` for the whole plan")
        if self.problems:
            raise PlanError(
                f"{len(self.problems)} problems: " + " | ".join(self.problems),
                "run `fedsilo validate EXPERIMENT.yaml` to see them one per line",
            )

    def parts(self) -> tuple[TaskModule, Strategy, LoopSettings]:
        """The task, strategy and loop settings of a valid plan (PlanError otherwise)."""
        self.raise_if_invalid()
        assert self.task is not None and self.strategy is not None and self.loop is not None
        return self.task, self.strategy, self.loop


def make_strategy(config: ExperimentConfig) -> Strategy:
    """The strategy object the ``strategy:`` section describes, inside central DP if ``privacy.dp`` asks.

    PlanError when a strategy of your own cannot be built (``build_plan`` lists why, one problem each).
    """
    strategy, problems = build_strategy(config)
    if strategy is None:
        Plan(config, problems=tuple(problems)).raise_if_invalid()
    assert strategy is not None
    return with_privacy(config, strategy)


def build_strategy(config: ExperimentConfig) -> tuple[Strategy | None, list[str]]:
    """The registered strategy ``strategy.name`` names, or yours (None, and why, when it cannot be built)."""
    s = config.strategy
    if isinstance(s, UserStrategyConfig):
        return user_strategy(config)
    return s.build(s.sampling()), []


def secagg_settings(config: ExperimentConfig) -> SecAggSettings | None:
    """``privacy.secure_aggregation`` (and, with it, ``privacy.dp`` as silo-side distributed DP) for the loop."""
    sa, dp = config.privacy.secure_aggregation, config.privacy.dp
    if sa is None:
        return None
    return SecAggSettings(
        sa.threshold, sa.neighbours, sa.clip, sa.frac_bits, sa.ring_bits, sa.step_timeout_s,
        dp.noise_multiplier if dp is not None else None, dp.clip_norm if dp is not None else 1.0,
    )  # fmt: skip


def fit_instructions(config: ExperimentConfig) -> FitInstructions:
    """What every silo's fit is told (the loop adds the strategy's extras, the run its name, and the
    secure-aggregation gatherer its request to keep the update)."""
    ldp = config.privacy.local_dp
    return FitInstructions(
        train=config.train_settings(),
        codec=Codec(config.compression.codec, config.compression.topk_fraction),
        local_dp=None
        if ldp is None
        else LocalDP(ldp.noise_multiplier, ldp.max_grad_norm, ldp.delta, ldp.poisson_sampling),
    )


def loop_settings(config: ExperimentConfig) -> LoopSettings:
    s = config.server
    return LoopSettings(
        config.rounds,
        config.seed,
        fit_instructions(config),
        round_timeout=s.round_timeout_s,
        wait_timeout=s.wait_timeout_s,
        failed_rounds_allowed=s.failed_rounds_allowed,
        secure_aggregation=secagg_settings(config),
        evaluate_every=s.evaluate_every,
    )


def build_plan(config: ExperimentConfig, silo_data: bool = True) -> Plan:
    """The checked plan; ``silo_data=False`` (a deployed server) does not look for the silos' folders."""
    problems = strategy_problems(config)
    task: TaskModule | None = None
    framework, initial = None, {}
    try:
        task = TaskModule.load(config.task)
        model = task.build_model(config.seed)
        framework = task.framework_of(model)
        initial = task.parameters_of(model)
    except FedsiloError as exc:
        problems.insert(0, exc.one_line())
        task = None
    hooks = [name for name in ("server_evaluate", "samples") if task is not None and task.hook(name)]
    named = " and ".join(f"{h}()" for h in hooks)
    if hooks and config.server.data is None:
        problems.append(
            f"the task defines {named}, which the server runs on server.data, "
            "but server.data is not set -> set server.data to a folder with a test split"
        )
    if hooks and framework != "torch":
        problems.append(
            f"{named} in {config.task} need a PyTorch task, but model() returned a {framework} model "
            "-> return a torch.nn.Module from model(), or remove those functions"
        )
    data = check_data(config, task, silo_data)
    problems += data.problems
    problems += training_problems(config, framework)
    problems += privacy_problems(config, framework)
    problems += missing_extras(config, framework, silos_here=silo_data)
    strategy = loop = None
    try:
        inner, found = build_strategy(config)
        problems += found
        strategy = None if inner is None else with_privacy(config, inner)
        loop = loop_settings(config)
    except FedsiloError as exc:
        problems.append(exc.one_line())
    s, n = config.strategy, len(config.silos)
    return Plan(
        config,
        framework=framework,
        num_parameters=sum(int(v.size) for v in initial.values()),
        num_arrays=len(initial),
        silos=data.silos,
        server_test_examples=data.server_test_examples,
        fit_per_round=sample_count(n, s.fraction_fit, s.min_fit_clients),
        evaluate_per_round=sample_count(n, s.fraction_evaluate, s.min_evaluate_clients)
        if s.fraction_evaluate > 0
        else 0,
        problems=tuple(problems),
        epsilon=projected_epsilon(config) if not any(p.startswith("privacy.dp") for p in problems) else None,
        task=task,
        initial=initial,
        strategy=strategy,
        loop=loop,
        silos_here=silo_data,
    )
