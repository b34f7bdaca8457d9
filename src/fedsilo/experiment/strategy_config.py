"""The ``strategy:`` section of the experiment YAML: one of the registered strategies, or yours.

The section is a tagged union over :data:`~fedsilo.experiment.strategy_registry.BUILTINS`, chosen
by ``name``; ``name`` may be left out (FedAvg). A misspelt name lists the names that exist; a
parameter given to a strategy that does not take it is an unknown key, like any misspelt key.

A name ``FILE.py:ClassName`` is a strategy of your own (:class:`UserStrategyConfig`): the file is
made absolute against the YAML's folder when the YAML is read, and the plan loads the class and
checks its keys (:mod:`fedsilo.experiment.user_strategy`). Checks that depend on the number of
silos (Krum's ``n > 2f + 2``, a trimmed mean that trims nothing) are the plan's, in ``checks.py``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from fedsilo.experiment.bounds import YAML_MODEL
from fedsilo.experiment.strategy_registry import (
    BUILTINS,
    MEAN_BASED,
    STRATEGY_NAMES,
    StrategyBase,
    own_keys,
)

USER_TAG = "FILE.py:ClassName"  # the union's tag of a strategy of your own (no built-in name has a ':')


class UserStrategyConfig(StrategyBase):
    """A strategy of your own: ``name: FILE.py:ClassName``; every other key goes to its constructor."""

    model_config = ConfigDict(**{**YAML_MODEL, "extra": "allow"})
    individual_updates: ClassVar[bool | None] = None

    name: str = Field(description="FILE.py:ClassName, the file relative to the YAML (absolute once read).")

    @field_validator("name")
    @classmethod
    def _file_and_class(cls, v: str) -> str:
        path, _, class_name = v.rpartition(":")
        if not path.endswith(".py") or not class_name.isidentifier():
            raise ValueError(f"a strategy of your own is named {USER_TAG} (the file relative to the YAML), not {v!r}")
        return v

    @model_validator(mode="after")
    def _finite(self) -> UserStrategyConfig:
        bad = [k for k, v in (self.model_extra or {}).items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: Input should be a finite number")
        return self

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
