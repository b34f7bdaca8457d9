"""A strategy of your own: ``strategy: {name: my_strategy.py:TrimmedFedAvg, beta: 0.2, fraction_fit: 0.5}``.

The file (relative to the YAML; absolute in ``config.json``, so ``--resume`` finds it) is imported
on the server the way the task module is (:func:`fedsilo.silo.task.import_task_module`). Its class
implements :class:`fedsilo.Strategy` (``name``, ``sampling``, ``initial_state``, ``fit_extras``,
``begin``); its constructor gets ``sampling`` (a :class:`fedsilo.Sampling` built from the common
keys) and the section's other keys as keyword arguments. Its :class:`~fedsilo.StrategyState` is
saved in every checkpoint, as a built-in strategy's is.

Unless the class says ``individual_updates = False`` (its aggregation needs only the
example-weighted mean), it is taken to look at each update on its own, so secure aggregation and
central DP refuse it. Everything that can go wrong (no file, no class, a class that is not a
strategy, a key its constructor does not take or needs, a constructor that raises) is one problem of
the plan naming ``strategy.name`` or ``strategy.<key>``, never a traceback.
"""

from __future__ import annotations

import difflib
import inspect

from fedsilo.errors import FedsiloError, PlanError, TaskError
from fedsilo.experiment.config import ExperimentConfig
from fedsilo.experiment.strategy_config import UserStrategyConfig, dp_refusal, secagg_refusal
from fedsilo.silo.task import import_task_module
from fedsilo.strategy.base import Strategy

METHODS = ("initial_state", "fit_extras", "begin")
DECLARATION = "individual_updates"  # the class attribute that says whether it needs each update
_SPEC_KEYS = ("name", "sampling")  # constructor parameters the YAML's own keys cannot reach
_README = "as in the README's 'Your own strategy'"


def user_strategy(config: ExperimentConfig) -> tuple[Strategy | None, list[str]]:
    """The strategy of your own that ``config.strategy`` names, or None and every problem found."""
    s = config.strategy
    assert isinstance(s, UserStrategyConfig)
    try:
        cls = load_class(s)
        problems = _key_problems(cls, s) + _privacy_problems(cls, config, s.label())
        if problems:
            return None, problems
        return _construct(cls, s), []
    except PlanError as exc:
        return None, [exc.one_line()]


def load_class(s: UserStrategyConfig) -> type:
    """The class ``s.name`` names, checked to have a strategy's methods (PlanError otherwise)."""
    path, class_name = s.location()
    if not path.is_file():
        raise PlanError(
            f"strategy.name: {path} does not exist",
            "put the strategy's file beside the experiment YAML, or fix its path (relative to the YAML)",
        )
    try:
        module = import_task_module(path)
    except TaskError as exc:
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {_one_line(cause)}" if cause is not None else exc.message
        fix = f"run `python {path}` to see the full error"
        raise PlanError(f"strategy.name: {path} failed to import: {detail}", fix) from None
    found = getattr(module, class_name, None)
    if found is None:
        classes = [n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__]
        close = difflib.get_close_matches(class_name, classes, n=1)
        fix = f"did you mean {close[0]}?" if close else f"name one of its classes: {', '.join(classes) or 'none'}"
        raise PlanError(f"strategy.name: {path.name} defines no {class_name}", fix)
    if not inspect.isclass(found):
        kind = type(found).__name__
        raise PlanError(
            f"strategy.name: {s.label()} is not a class (it is of type {kind})", "name your strategy's class"
        )
    missing = [m for m in METHODS if not callable(getattr(found, m, None))]
    if missing:
        raise PlanError(
            f"strategy.name: {s.label()} is not a fedsilo Strategy: it has no {', '.join(missing)}",
            f"give it name, sampling, initial_state(), fit_extras() and begin(), {_README}",
        )
    if not isinstance(getattr(found, DECLARATION, True), bool):
        raise PlanError(
            f"strategy.name: {s.label()}.{DECLARATION} is {getattr(found, DECLARATION)!r}",
            "set it to False if the strategy needs only the example-weighted mean of the updates, else True",
        )
    return found


def needs_individual_updates(cls: type) -> bool:
    """What the class declares; True when it does not say (the safe assumption)."""
    return bool(getattr(cls, DECLARATION, True))


def _key_problems(cls: type, s: UserStrategyConfig) -> list[str]:
    """The section's keys against the constructor: each unknown key, each missing one, a missing ``sampling``."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a constructor Python cannot describe: calling it will tell
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    problems = []
    if "sampling" not in named:
        problems.append(
            f"strategy.name: {s.label()}'s constructor takes no sampling -> add a `sampling: fedsilo.Sampling` "
            "parameter (fedsilo passes one, from strategy.fraction_fit, min_fit_clients, ...)"
        )
    own = [n for n in named if n not in _SPEC_KEYS]
    takes = f"{cls.__name__} takes {', '.join(own)}" if own else f"{cls.__name__} has no parameters of its own"
    for key in s.params():
        if key not in own:
            problems.append(
                f"strategy.{key}: unknown key for {s.label()} (misspelt?; {takes}) "
                f"-> remove it, or add {key} to {cls.__name__}'s constructor"
            )
    for key in own:
        if params[key].default is params[key].empty and key not in s.params():
            problems.append(
                f"strategy.{key}: {s.label()} needs {key} (its constructor has no default) -> set strategy.{key}"
            )
    return problems


def _privacy_problems(cls: type, config: ExperimentConfig, label: str) -> list[str]:
    """Secure aggregation and central DP hand the strategy one mean: refused unless it declares that is enough."""
    if not needs_individual_updates(cls):
        return []
    fix = f"-> if it needs only the example-weighted mean of the updates, set `{DECLARATION} = False` in {cls.__name__}"
    problems = []
    if config.privacy.secure_aggregation is not None:
        problems.append(f"privacy.secure_aggregation: {secagg_refusal(label)} {fix}")
    if config.privacy.dp is not None:
        problems.append(f"{dp_refusal(label)} {fix}")
    return problems


def _construct(cls: type, s: UserStrategyConfig) -> Strategy:
    """``cls(sampling=..., **params)``, and what the server loop relies on checked (PlanError otherwise)."""
    sampling, params = s.sampling(), s.params()
    call = f"{s.label()}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
    try:
        strategy = cls(sampling=sampling, **params)
    except Exception as exc:
        fix = exc.fix if isinstance(exc, FedsiloError) and exc.fix else "fix the strategy's keys in the YAML"
        raise PlanError(f"strategy.name: {call} raised {type(exc).__name__}: {_one_line(exc)}", fix) from None
    if not isinstance(getattr(strategy, "name", None), str):
        raise PlanError(
            f"strategy.name: {call}.name is {getattr(strategy, 'name', None)!r}, not a string",
            'give the strategy a name, e.g. a field `name: str = "mine"`',
        )
    if getattr(strategy, "sampling", None) != sampling:
        raise PlanError(
            f"strategy.name: {call}.sampling is not the Sampling it was given",
            "keep the constructor's sampling argument as the strategy's sampling",
        )
    return strategy


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or "(no message)"
