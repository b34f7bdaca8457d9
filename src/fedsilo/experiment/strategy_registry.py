"""The registry of built-in strategies: each registers once, here, by its YAML model.

A model (:func:`register`) holds a strategy's ``name`` (its ``Literal``), the keys it takes beside
the common sampling keys (``fraction_fit`` ... ``min_available_clients``), each with the default of
the Python class that owns it (so ``FedOpt("fedavgm")`` and ``strategy: {name: fedavgm}`` are the
same strategy), how it builds the strategy (:meth:`StrategyBase.build`), and whether the strategy
needs every silo's own update (``individual_updates``: the robust rules, which secure aggregation
and central DP refuse). The YAML's tagged union, the names errors list, the plan's construction,
the privacy cross-checks and what ``fedsilo validate`` prints derive from :data:`BUILTINS`
(:mod:`fedsilo.experiment.strategy_config`). Unknown keys are rejected.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal, TypeVar, get_args

from pydantic import BaseModel, Field

from fedsilo.experiment.bounds import YAML_MODEL, count_field
from fedsilo.experiment.defaults import default_of
from fedsilo.strategy.base import Sampling, Strategy
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.strategy.fedopt import DEFAULT_MEAN_ONLY, FEDOPT_NAMES, FedOpt
from fedsilo.strategy.fedprox import FedProx
from fedsilo.strategy.robust import Robust, RobustName

SAMPLING_KEYS = tuple(f.name for f in dataclasses.fields(Sampling))  # fraction_fit ... min_available_clients


class StrategyBase(BaseModel):
    """The keys every strategy takes: how many silos each round samples (:class:`Sampling`)."""

    model_config = YAML_MODEL
    #: Whether the strategy looks at each silo's update on its own (None: its class says, once loaded).
    individual_updates: ClassVar[bool | None] = False

    name: str
    fraction_fit: float = Field(default_of(Sampling, "fraction_fit"), gt=0, le=1)
    fraction_evaluate: float = Field(default_of(Sampling, "fraction_evaluate"), ge=0, le=1)
    min_fit_clients: int = count_field(default_of(Sampling, "min_fit_clients"))
    min_evaluate_clients: int = count_field(default_of(Sampling, "min_evaluate_clients"))
    min_available_clients: int = count_field(default_of(Sampling, "min_available_clients"))

    def sampling(self) -> Sampling:
        return Sampling(**{k: getattr(self, k) for k in SAMPLING_KEYS})

    @classmethod
    def own_keys(cls) -> list[str]:
        """The keys this strategy takes beyond ``name`` and the sampling keys, in the model's order."""
        return [k for k in cls.model_fields if k not in SAMPLING_KEYS and k != "name"]

    def params(self) -> dict[str, Any]:
        """The strategy's own keys and their values (what ``fedsilo validate`` prints)."""
        dumped = self.model_dump()
        return {k: dumped[k] for k in self.own_keys()}

    def build(self, sampling: Sampling) -> Strategy:
        raise NotImplementedError(f"{type(self).__name__} builds no strategy")


M = TypeVar("M", bound=StrategyBase)
BUILTINS: dict[str, type[StrategyBase]] = {}


def register(model: type[M]) -> type[M]:
    """Register a built-in strategy by its YAML model (the model's ``Literal`` name is its name)."""
    (name,) = get_args(model.model_fields["name"].annotation)
    if name in BUILTINS:
        raise ValueError(f"strategy {name!r} is registered twice")
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


class _AdaptiveBase(StrategyBase):
    """FedAdagrad, FedAdam and FedYogi: their keys are FedOpt's own, ``mean_only`` as a tuple."""

    name: Literal["fedadagrad", "fedadam", "fedyogi"]

    def build(self, sampling: Sampling) -> Strategy:
        params = self.params()
        return FedOpt(self.name, sampling, **{**params, "mean_only": tuple(params["mean_only"])})


@register
class FedAdagradConfig(_AdaptiveBase):
    """FedAdagrad (Reddi et al., ICLR 2021)."""

    name: Literal["fedadagrad"]
    eta: float = Field(_FEDOPT["fedadagrad"].eta, gt=0, description="Server learning rate.")
    beta1: float = Field(_FEDOPT["fedadagrad"].beta1, ge=0, lt=1, description="First-moment (momentum) decay.")
    tau: float = Field(_FEDOPT["fedadagrad"].tau, gt=0, description=_TAU)
    mean_only: list[str] = _mean_only()


class _AdamLike(_AdaptiveBase):
    """FedAdam and FedYogi take the same keys (Reddi et al., ICLR 2021); they differ in the second moment."""

    name: Literal["fedadam", "fedyogi"]
    eta: float = Field(_FEDOPT["fedadam"].eta, gt=0, description="Server learning rate.")
    beta1: float = Field(_FEDOPT["fedadam"].beta1, ge=0, lt=1, description="First-moment (momentum) decay.")
    beta2: float = Field(_FEDOPT["fedadam"].beta2, ge=0, lt=1, description="Second-moment decay.")
    tau: float = Field(_FEDOPT["fedadam"].tau, gt=0, description=_TAU)
    mean_only: list[str] = _mean_only()


@register
class FedAdamConfig(_AdamLike):
    """FedAdam (Reddi et al., ICLR 2021)."""

    name: Literal["fedadam"]


@register
class FedYogiConfig(_AdamLike):
    """FedYogi (Reddi et al., ICLR 2021)."""

    name: Literal["fedyogi"]


class _RobustBase(StrategyBase):
    """The robust rules: each update on its own, and their keys are Robust's own."""

    individual_updates: ClassVar[bool | None] = True
    name: RobustName

    def build(self, sampling: Sampling) -> Strategy:
        return Robust(self.name, sampling, **self.params())


@register
class MedianConfig(_RobustBase):
    """Coordinate-wise median (Yin et al., ICML 2018); unweighted."""

    name: Literal["median"]


@register
class TrimmedMeanConfig(_RobustBase):
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018); unweighted."""

    name: Literal["trimmed_mean"]
    beta: float = Field(
        default_of(Robust, "beta"), gt=0, lt=0.5, description="Share of values dropped at each end, per coordinate."
    )


@register
class KrumConfig(_RobustBase):
    """Krum (Blanchard et al., NeurIPS 2017): the one update closest to its neighbours."""

    name: Literal["krum"]
    byzantine: int = count_field(default_of(Robust, "byzantine"), ge=0, description=_BYZANTINE)


@register
class MultiKrumConfig(_RobustBase):
    """Multi-Krum (Blanchard et al., NeurIPS 2017): the mean of the m best-scored updates."""

    name: Literal["multi_krum"]
    byzantine: int = count_field(default_of(Robust, "byzantine"), ge=0, description=_BYZANTINE)
    num_selected: int | None = count_field(
        default_of(Robust, "num_selected"), description="m; default n - f of the n updates received."
    )


STRATEGY_NAMES: tuple[str, ...] = tuple(BUILTINS)
MEAN_BASED: tuple[str, ...] = tuple(n for n, m in BUILTINS.items() if not m.individual_updates)


def own_keys(name: str) -> list[str]:
    """The keys built-in strategy ``name`` takes beyond the common ones, in one fixed order."""
    return BUILTINS[name].own_keys()
