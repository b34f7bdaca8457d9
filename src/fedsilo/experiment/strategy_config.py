"""The ``strategy:`` section of the experiment YAML: one model per strategy, chosen by ``name``.

Every strategy shares the sampling keys (``fraction_fit`` ... ``min_available_clients``) and adds
its own parameters, with the defaults of its paper. ``name`` may be left out (FedAvg). A misspelt
name lists the names that exist; a parameter given to a strategy that does not take it is an
unknown key, like any misspelt key. Checks that depend on the number of silos (Krum's ``n > 2f + 2``,
a trimmed mean that trims nothing) are the plan's, in ``plan.py``.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

_MEAN_ONLY = Field(
    default=["*running_mean", "*running_var"],
    description="Float arrays (glob patterns on their names) that take the weighted mean, not a server step.",
)


class _StrategyBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fraction_fit: float = Field(1.0, gt=0, le=1)
    fraction_evaluate: float = Field(1.0, ge=0, le=1)
    min_fit_clients: int = Field(1, ge=1)
    min_evaluate_clients: int = Field(1, ge=1)
    min_available_clients: int = Field(1, ge=1)


class FedAvgConfig(_StrategyBase):
    """FedAvg (McMahan et al., AISTATS 2017): the example-weighted mean of the silos' models."""

    name: Literal["fedavg"] = "fedavg"


class FedProxConfig(_StrategyBase):
    """FedProx (Li et al., MLSys 2020): FedAvg plus ``mu/2 * ||w - w_global||^2`` in local training."""

    name: Literal["fedprox"]
    mu: float = Field(0.01, gt=0, description="Proximal coefficient; the paper tries 0.001 to 1.")


class FedAvgMConfig(_StrategyBase):
    """FedAvgM (Hsu et al. 2019): server momentum on the averaged update."""

    name: Literal["fedavgm"]
    eta: float = Field(1.0, gt=0, description="Server learning rate (1 with momentum 0 is FedAvg).")
    momentum: float = Field(0.9, ge=0, lt=1, description="Server momentum beta.")
    mean_only: list[str] = _MEAN_ONLY


class _AdaptiveBase(_StrategyBase):
    eta: float = Field(1e-2, gt=0, description="Server learning rate.")
    beta1: float = Field(0.9, ge=0, lt=1, description="First-moment (momentum) decay.")
    tau: float = Field(1e-3, gt=0, description="Adaptivity: added to sqrt(v); smaller = more adaptive.")
    mean_only: list[str] = _MEAN_ONLY


class FedAdagradConfig(_AdaptiveBase):
    """FedAdagrad (Reddi et al., ICLR 2021)."""

    name: Literal["fedadagrad"]
    eta: float = Field(1e-1, gt=0, description="Server learning rate.")


class FedAdamConfig(_AdaptiveBase):
    """FedAdam (Reddi et al., ICLR 2021)."""

    name: Literal["fedadam"]
    beta2: float = Field(0.99, ge=0, lt=1, description="Second-moment decay.")


class FedYogiConfig(_AdaptiveBase):
    """FedYogi (Reddi et al., ICLR 2021)."""

    name: Literal["fedyogi"]
    beta2: float = Field(0.99, ge=0, lt=1, description="Second-moment decay.")


class MedianConfig(_StrategyBase):
    """Coordinate-wise median (Yin et al., ICML 2018); unweighted."""

    name: Literal["median"]


class TrimmedMeanConfig(_StrategyBase):
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018); unweighted."""

    name: Literal["trimmed_mean"]
    beta: float = Field(0.1, gt=0, lt=0.5, description="Share of values dropped at each end, per coordinate.")


class KrumConfig(_StrategyBase):
    """Krum (Blanchard et al., NeurIPS 2017): the one update closest to its neighbours."""

    name: Literal["krum"]
    byzantine: int = Field(1, ge=0, description="f: how many silos may send arbitrary updates.")


class MultiKrumConfig(_StrategyBase):
    """Multi-Krum (Blanchard et al., NeurIPS 2017): the mean of the m best-scored updates."""

    name: Literal["multi_krum"]
    byzantine: int = Field(1, ge=0, description="f: how many silos may send arbitrary updates.")
    num_selected: int | None = Field(None, ge=1, description="m; default n - f of the n updates received.")


_MODELS: tuple[type[_StrategyBase], ...] = (
    FedAvgConfig,
    FedProxConfig,
    FedAvgMConfig,
    FedAdagradConfig,
    FedAdamConfig,
    FedYogiConfig,
    MedianConfig,
    TrimmedMeanConfig,
    KrumConfig,
    MultiKrumConfig,
)
STRATEGY_NAMES: tuple[str, ...] = tuple(get_args(m.model_fields["name"].annotation)[0] for m in _MODELS)
COMMON_KEYS = frozenset(_StrategyBase.model_fields)
_PARAM_ORDER = ["mu", "eta", "momentum", "beta1", "beta2", "tau", "beta", "byzantine", "num_selected", "mean_only"]


def _name_of(value: Any) -> str:
    """The tag that picks the model: ``name``, FedAvg when it is left out."""
    name = value.get("name", "fedavg") if isinstance(value, dict) else getattr(value, "name", "fedavg")
    return name if isinstance(name, str) else repr(name)


StrategyConfig = Annotated[
    Annotated[FedAvgConfig, Tag("fedavg")]
    | Annotated[FedProxConfig, Tag("fedprox")]
    | Annotated[FedAvgMConfig, Tag("fedavgm")]
    | Annotated[FedAdagradConfig, Tag("fedadagrad")]
    | Annotated[FedAdamConfig, Tag("fedadam")]
    | Annotated[FedYogiConfig, Tag("fedyogi")]
    | Annotated[MedianConfig, Tag("median")]
    | Annotated[TrimmedMeanConfig, Tag("trimmed_mean")]
    | Annotated[KrumConfig, Tag("krum")]
    | Annotated[MultiKrumConfig, Tag("multi_krum")],
    Discriminator(_name_of),
]


def strategy_params(config: StrategyConfig) -> dict[str, Any]:
    """A strategy's own parameters (the sampling keys and ``name`` left out)."""
    dumped = config.model_dump()
    return {k: dumped[k] for k in own_keys(config.name)}


def own_keys(name: str) -> list[str]:
    """The keys strategy ``name`` takes beyond the common ones, in one fixed order."""
    model = dict(zip(STRATEGY_NAMES, _MODELS, strict=True))[name]
    return sorted((k for k in model.model_fields if k not in COMMON_KEYS and k != "name"), key=_PARAM_ORDER.index)


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
        return ("strategy", "name"), f"unknown strategy '{tag}'{hint} (use one of: {', '.join(STRATEGY_NAMES)})"
    if len(loc) < 2 or loc[1] not in STRATEGY_NAMES:
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
