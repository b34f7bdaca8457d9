"""The ``strategy:`` section of the experiment YAML: the registry of built-in strategies, and yours.

Each built-in strategy registers once, here (:func:`register` on its YAML model): its ``name``, the
keys it takes beside the common sampling keys (``fraction_fit`` ... ``min_available_clients``), with
the defaults of the Python class that owns them, how it builds the strategy (:meth:`build`), and
whether it needs every silo's own update (``individual_updates``: the robust rules, which secure
aggregation and central DP refuse). The tagged union the schema validates with, the names errors
list, the plan's construction, the privacy cross-checks and what ``fedsilo validate`` prints all
derive from the registry. ``name`` may be left out (FedAvg); a misspelt name lists the names that
exist; a parameter given to a strategy that does not take it is an unknown key.

A name ``FILE.py:ClassName`` is a strategy of your own (:class:`UserStrategyConfig`): the file is
made absolute against the YAML's folder when the YAML is read, and the plan loads the class and
checks its keys (:mod:`fedsilo.experiment.user_strategy`). Checks that depend on the number of
silos (Krum's ``n > 2f + 2``, a trimmed mean that trims nothing) are the plan's, in ``checks.py``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from fedsilo.experiment.defaults import default_of
from fedsilo.strategy.base import Sampling, Strategy
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.strategy.fedopt import DEFAULT_MEAN_ONLY, FEDOPT_NAMES, FedOpt
from fedsilo.strategy.fedprox import FedProx
from fedsilo.strategy.robust import Robust

SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(Sampling))  # fraction_fit ... min_available_clients
USER_TAG = "FILE.py:ClassName"  # the union's tag of a strategy of your own (no built-in name has a ':')


class StrategyBase(BaseModel):
    """The keys every strategy takes: how many silos each round samples (:class:`Sampling`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Whether the strategy looks at each silo's update on its own (None: its class says, once loaded).
    individual_updates: ClassVar[bool | None] = False

    name: str
    fraction_fit: float = Field(default_of(Sampling, "fraction_fit"), gt=0, le=1)
    fraction_evaluate: float = Field(default_of(Sampling, "fraction_evaluate"), ge=0, le=1)
    min_fit_clients: int = Field(default_of(Sampling, "min_fit_clients"), ge=1)
    min_evaluate_clients: int = Field(default_of(Sampling, "min_evaluate_clients"), ge=1)
    min_available_clients: int = Field(default_of(Sampling, "min_available_clients"), ge=1)

    def sampling(self) -> Sampling:
        return Sampling(**{k: getattr(self, k) for k in SAMPLING_KEYS})

    def params(self) -> dict[str, Any]:
        """The strategy's own keys (``name`` and the sampling keys left out), in a fixed order."""
        dumped = self.model_dump()
        return {k: dumped[k] for k in type(self).model_fields if k not in SAMPLING_KEYS and k != "name"}

    def build(self, sampling: Sampling) -> Strategy:
        raise NotImplementedError(f"{type(self).__name__} builds no strategy")


M = TypeVar("M", bound=StrategyBase)
BUILTINS: dict[str, type[StrategyBase]] = {}


def register(model: type[M]) -> type[M]:
    """Register a built-in strategy by its YAML model (the model's ``Literal`` name is its name)."""
    (name,) = get_args(model.model_fields["name"].annotation)
    BUILTINS[name] = model
    return model


_TAU = "Adaptivity: added to sqrt(v); smaller = more adaptive."
_BYZANTINE = "f: how many silos may send arbitrary updates."
_FEDOPT = {name: FedOpt(name) for name in FEDOPT_NAMES}  # each rule's defaults, which the YAML's are


def _mean_only() -> Any:
    return Field(
        list(DEFAULT_MEAN_ONLY),
        description="Float arrays (glob patterns on their names) that take the weighted mean, not a server step.",
    )


@register
class FedAvgConfig(StrategyBase):
    """FedAvg (McMahan et al., AISTATS 2017): the example-weighted mean of the silos' models."""

    name: Literal["fedavg"] = "fedavg"

    def build(self, sampling: Sampling) -> Strategy:
        return FedAvg(sampling)


@register
class FedProxConfig(StrategyBase):
    """FedProx (Li et al., MLSys 2020): FedAvg plus ``mu/2 * ||w - w_global||^2`` in local training."""

    name: Literal["fedprox"]
    mu: float = Field(default_of(FedProx, "mu"), gt=0, description="Proximal coefficient; the paper tries 0.001 to 1.")

    def build(self, sampling: Sampling) -> Strategy:
        return FedProx(self.mu, sampling)


@register
class FedAvgMConfig(StrategyBase):
    """FedAvgM (Hsu et al. 2019): server momentum on the averaged update."""

    name: Literal["fedavgm"]
    eta: float = Field(_FEDOPT["fedavgm"].eta, gt=0, description="Server learning rate (1 with momentum 0 is FedAvg).")
    momentum: float = Field(_FEDOPT["fedavgm"].beta1, ge=0, lt=1, description="Server momentum beta.")
    mean_only: list[str] = _mean_only()

    def build(self, sampling: Sampling) -> Strategy:
        return FedOpt(self.name, sampling, eta=self.eta, beta1=self.momentum, mean_only=tuple(self.mean_only))


@register
class FedAdagradConfig(StrategyBase):
    """FedAdagrad (Reddi et al., ICLR 2021)."""

    name: Literal["fedadagrad"]
    eta: float = Field(_FEDOPT["fedadagrad"].eta, gt=0, description="Server learning rate.")
    beta1: float = Field(_FEDOPT["fedadagrad"].beta1, ge=0, lt=1, description="First-moment (momentum) decay.")
    tau: float = Field(_FEDOPT["fedadagrad"].tau, gt=0, description=_TAU)
    mean_only: list[str] = _mean_only()

    def build(self, sampling: Sampling) -> Strategy:
        mean_only = tuple(self.mean_only)
        return FedOpt(self.name, sampling, eta=self.eta, beta1=self.beta1, tau=self.tau, mean_only=mean_only)


class _AdamLike(StrategyBase):
    """FedAdam and FedYogi take the same keys (Reddi et al., ICLR 2021); they differ in the second moment."""

    name: Literal["fedadam", "fedyogi"]
    eta: float = Field(_FEDOPT["fedadam"].eta, gt=0, description="Server learning rate.")
    beta1: float = Field(_FEDOPT["fedadam"].beta1, ge=0, lt=1, description="First-moment (momentum) decay.")
    beta2: float = Field(_FEDOPT["fedadam"].beta2, ge=0, lt=1, description="Second-moment decay.")
    tau: float = Field(_FEDOPT["fedadam"].tau, gt=0, description=_TAU)
    mean_only: list[str] = _mean_only()

    def build(self, sampling: Sampling) -> Strategy:
        mean_only = tuple(self.mean_only)
        return FedOpt(self.name, sampling, self.eta, self.beta1, self.beta2, self.tau, mean_only)


@register
class FedAdamConfig(_AdamLike):
    """FedAdam (Reddi et al., ICLR 2021)."""

    name: Literal["fedadam"]


@register
class FedYogiConfig(_AdamLike):
    """FedYogi (Reddi et al., ICLR 2021)."""

    name: Literal["fedyogi"]


class _RobustBase(StrategyBase):
    individual_updates: ClassVar[bool | None] = True


@register
class MedianConfig(_RobustBase):
    """Coordinate-wise median (Yin et al., ICML 2018); unweighted."""

    name: Literal["median"]

    def build(self, sampling: Sampling) -> Strategy:
        return Robust(self.name, sampling)


@register
class TrimmedMeanConfig(_RobustBase):
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018); unweighted."""

    name: Literal["trimmed_mean"]
    beta: float = Field(
        default_of(Robust, "beta"), gt=0, lt=0.5, description="Share of values dropped at each end, per coordinate."
    )

    def build(self, sampling: Sampling) -> Strategy:
        return Robust(self.name, sampling, beta=self.beta)


@register
class KrumConfig(_RobustBase):
    """Krum (Blanchard et al., NeurIPS 2017): the one update closest to its neighbours."""

    name: Literal["krum"]
    byzantine: int = Field(default_of(Robust, "byzantine"), ge=0, description=_BYZANTINE)

    def build(self, sampling: Sampling) -> Strategy:
        return Robust(self.name, sampling, byzantine=self.byzantine)


@register
class MultiKrumConfig(_RobustBase):
    """Multi-Krum (Blanchard et al., NeurIPS 2017): the mean of the m best-scored updates."""

    name: Literal["multi_krum"]
    byzantine: int = Field(default_of(Robust, "byzantine"), ge=0, description=_BYZANTINE)
    num_selected: int | None = Field(
        default_of(Robust, "num_selected"), ge=1, description="m; default n - f of the n updates received."
    )

    def build(self, sampling: Sampling) -> Strategy:
        return Robust(self.name, sampling, byzantine=self.byzantine, num_selected=self.num_selected)


class UserStrategyConfig(StrategyBase):
    """A strategy of your own: ``name: FILE.py:ClassName``; every other key goes to its constructor."""

    model_config = ConfigDict(extra="allow", frozen=True)
    individual_updates: ClassVar[bool | None] = None

    name: str = Field(description="FILE.py:ClassName, the file relative to the YAML (absolute once read).")

    @field_validator("name")
    @classmethod
    def _file_and_class(cls, v: str) -> str:
        path, _, class_name = v.rpartition(":")
        if not path.endswith(".py") or not class_name.isidentifier():
            raise ValueError(f"a strategy of your own is named {USER_TAG} (the file relative to the YAML), not {v!r}")
        return v

    def location(self) -> tuple[Path, str]:
        """The strategy's file and the name of its class."""
        path, _, class_name = self.name.rpartition(":")
        return Path(path), class_name

    def label(self) -> str:
        """``FILE.py:ClassName`` without the file's folder, for messages."""
        path, class_name = self.location()
        return f"{path.name}:{class_name}"

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


STRATEGY_NAMES: tuple[str, ...] = tuple(BUILTINS)
MEAN_BASED: tuple[str, ...] = tuple(n for n, m in BUILTINS.items() if not m.individual_updates)


def _name_of(value: Any) -> str:
    """The tag that picks the model: ``name``, FedAvg when it is left out, yours when it has a ':'."""
    name = value.get("name", "fedavg") if isinstance(value, dict) else getattr(value, "name", "fedavg")
    if isinstance(name, str) and ":" in name:
        return USER_TAG
    return name if isinstance(name, str) else repr(name)


if TYPE_CHECKING:
    StrategyConfig = StrategyBase
else:
    StrategyConfig = Annotated[
        Union[  # noqa: UP007 - built from the registry at import time, which `X | Y` cannot spell
            (*(Annotated[m, Tag(n)] for n, m in BUILTINS.items()), Annotated[UserStrategyConfig, Tag(USER_TAG)])
        ],
        Discriminator(_name_of),
    ]


def strategy_params(config: StrategyBase) -> dict[str, Any]:
    """A strategy's own parameters (the sampling keys and ``name`` left out)."""
    return config.params()


def own_keys(name: str) -> list[str]:
    """The keys built-in strategy ``name`` takes beyond the common ones, in one fixed order."""
    return [k for k in BUILTINS[name].model_fields if k not in SAMPLING_KEYS and k != "name"]


def _mean_based() -> str:
    return f"{', '.join(MEAN_BASED[:-1])} or {MEAN_BASED[-1]}"


def secagg_refusal(name: str) -> str:
    """Why secure aggregation cannot run strategy ``name``, which needs every silo's own update."""
    return f"strategy {name} needs every silo's own update, which secure aggregation hides (use {_mean_based()})"


def dp_refusal(name: str) -> str:
    """Why central DP cannot run strategy ``name``, which needs every silo's own update."""
    return (
        f"privacy.dp releases a noised mean, but strategy {name} looks at each update on its own "
        f"(use {_mean_based()} with privacy.dp)"
    )


def resolve_strategy_name(section: Any, resolve: Callable[[str], str]) -> Any:
    """The ``strategy:`` section with the file of a strategy of your own passed through ``resolve``
    (the YAML's reader makes it absolute against the YAML's folder, as it does every path)."""
    name = section.get("name") if isinstance(section, dict) else None
    if not isinstance(name, str) or ":" not in name:
        return section
    path, _, class_name = name.rpartition(":")
    if not path.endswith(".py"):
        return section  # not a file: the schema says so, with the name as it was written
    return {**section, "name": f"{resolve(path)}:{class_name}"}


def strategy_error(loc: tuple[Any, ...], err: Any) -> tuple[tuple[Any, ...], str] | None:
    """A clearer location and message for errors under ``strategy``, or None to keep pydantic's.

    The union's tag is dropped from the location (``strategy.mu``, not ``strategy.fedprox.mu``).
    """
    if not loc or loc[0] != "strategy":
        return None
    if err["type"] == "union_tag_invalid":
        tag = str(err.get("ctx", {}).get("tag", "?"))
        close = difflib.get_close_matches(tag, STRATEGY_NAMES, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        if tag.endswith(".py"):
            hint = f"; name its class too: '{tag}:ClassName'"
        use = f"use one of: {', '.join(STRATEGY_NAMES)}; or a class of your own as {USER_TAG}"
        return ("strategy", "name"), f"unknown strategy '{tag}'{hint} ({use})"
    if len(loc) < 2 or loc[1] not in (*STRATEGY_NAMES, USER_TAG):
        return None
    tag, rest = str(loc[1]), ("strategy", *loc[2:])
    if err["type"] == "extra_forbidden":
        own = own_keys(tag)
        takes = f"{tag} takes {', '.join(own)}" if own else f"{tag} has no parameters of its own"
        return rest, f"unknown key for {tag} (misspelt?; {takes})"
    if err["type"] == "model_type" and len(rest) == 1:
        given = err.get("input")
        example = given if isinstance(given, str) and given else "fedadam"
        return rest, f"expected a mapping with a name, e.g. `strategy: {{name: {example}}}`"
    return rest, str(err["msg"]).removeprefix("Value error, ")
