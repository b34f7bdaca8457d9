"""What the server asks a silo to do: one frozen, typed object per call, the same JSON on every wire.

A fit instruction carries the local training settings, the codec the update goes up in, a request
for local DP-SGD, a request to keep the update for secure aggregation (with the silo's share of the
DP noise), the strategy's extras (FedProx's ``proximal_mu``) and the run the silo's own state
belongs to. The server builds it from the plan; every transport sends :meth:`FitInstructions.to_json`
and the silo parses it with :meth:`FitInstructions.from_json`, strictly: an unknown key, a value of
the wrong type or out of range is a :class:`~fedsilo.errors.ProtocolError`, never ignored.

The defaults here are the defaults of the experiment YAML (its schema reads them from these
classes), so the Python API and the YAML cannot disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeVar, get_args

from pydantic import ConfigDict, TypeAdapter, ValidationError

from fedsilo.errors import ParameterError, ProtocolError
from fedsilo.wire.codecs import Codec

STRICT = ConfigDict(extra="forbid", strict=True)
Optimizer = Literal["sgd", "adam", "adamw"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$|^$")  # a folder name on the silo: no path


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """Local training settings, as the client and the task's own hooks read them.

    ``seed`` and ``round`` are the silo's own for this fit (the agent derives the seed from the
    experiment's seed, the round and the silo's name); ``proximal_mu`` is FedProx's term.
    ``epochs_per_round`` is for a baseline that trains every round's epochs in one go.
    """

    __pydantic_config__: ClassVar[ConfigDict] = STRICT

    epochs: int = 1
    batch_size: int = 32
    optimizer: Optimizer = "sgd"
    lr: float = 0.01
    lr_decay: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    device: str = "auto"
    epochs_per_round: int = 0
    seed: int = 0
    round: int = 1
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        counts = ("epochs", "batch_size")
        problems = [f"{k} must be >= 1, got {getattr(self, k)}" for k in counts if getattr(self, k) < 1]
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            problems.append(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.proximal_mu < 0:
            problems.append(f"proximal_mu must be >= 0, got {self.proximal_mu}")
        if problems:
            raise ParameterError("invalid training settings: " + "; ".join(problems), "see `train:` in the README")

    def lr_at(self, epoch: int) -> float:
        """Learning rate for local ``epoch`` (0-based): ``lr * lr_decay ** (round - 1)``.

        A baseline that trains all rounds' epochs in one go passes ``epochs_per_round`` so the
        rate steps down every ``epochs_per_round`` epochs, as it would have across rounds.
        """
        per_round = self.epochs_per_round or self.epochs
        return self.lr * self.lr_decay ** (self.round - 1 + epoch // per_round)


@dataclass(frozen=True, slots=True)
class LocalDP:
    """DP-SGD in the silo (Opacus): per-sample clipping to ``max_grad_norm`` and Gaussian noise.

    ``poisson_sampling=False`` keeps fixed-size shuffled batches; the accountant then still assumes
    Poisson sampling at rate batch / records, an approximation (exact guarantees need True).
    """

    __pydantic_config__: ClassVar[ConfigDict] = STRICT

    noise_multiplier: float
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    poisson_sampling: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not self.noise_multiplier >= 0:
            problems.append(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            problems.append(f"delta must be in (0, 1), got {self.delta}")
        if problems:
            raise ParameterError("invalid local DP settings: " + "; ".join(problems), "see privacy.local_dp")


@dataclass(frozen=True, slots=True)
class DistributedNoise:
    """Each silo's share of DP-FedAvg's noise under secure aggregation: ``N(0, (z C)^2 / t)``."""

    __pydantic_config__: ClassVar[ConfigDict] = STRICT

    noise_multiplier: float  # z
    clip_norm: float  # C
    min_silos: int = 1  # the server's min_fit_clients: a sum never holds fewer updates


@dataclass(frozen=True, slots=True)
class SecAggRequest:
    """Keep the trained update in the silo: only masked bytes leave, through the protocol's steps."""

    __pydantic_config__: ClassVar[ConfigDict] = STRICT

    noise: DistributedNoise | None = None  # distributed DP, when the run spends privacy


@dataclass(frozen=True, slots=True)
class StrategyExtras:
    """What a strategy adds to every silo's fit; a closed set, so a typo cannot pass unnoticed."""

    __pydantic_config__: ClassVar[ConfigDict] = STRICT

    proximal_mu: float = 0.0  # FedProx: mu/2 ||w - w_global||^2 in the local objective


@dataclass(frozen=True, slots=True)
class FitInstructions:
    """Everything a silo needs to answer one fit (see the module docstring)."""

    __pydantic_config__: ClassVar[ConfigDict] = STRICT

    train: TrainSettings = field(default_factory=TrainSettings)
    strategy: StrategyExtras = field(default_factory=StrategyExtras)
    codec: Codec = field(default_factory=Codec)
    local_dp: LocalDP | None = None
    secagg: SecAggRequest | None = None
    run: str = ""  # the run folder's name: the silo keeps its state between rounds under it

    def __post_init__(self) -> None:
        if not RUN_NAME.match(self.run):
            raise ParameterError(
                f"run must be a plain folder name, got {self.run!r}", "name runs with letters, digits, '.', '_' or '-'"
            )

    def to_json(self) -> str:
        return _FIT.dump_json(self).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> FitInstructions:
        return _parse(_FIT, text, "fit")


@dataclass(frozen=True, slots=True)
class EvaluateInstructions:
    """What a silo needs to evaluate: the seed a task's own evaluate hook runs with."""

    __pydantic_config__: ClassVar[ConfigDict] = STRICT

    seed: int = 0

    def to_json(self) -> str:
        return _EVALUATE.dump_json(self).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> EvaluateInstructions:
        return _parse(_EVALUATE, text, "evaluate")


_FIT = TypeAdapter(FitInstructions)
_EVALUATE = TypeAdapter(EvaluateInstructions)
T = TypeVar("T")


def _parse(adapter: TypeAdapter[T], text: str | bytes, kind: str) -> T:
    try:
        return adapter.validate_json(text)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
            + ("unknown key" if e["type"] == "unexpected_keyword_argument" else str(e["msg"]))
            for e in exc.errors()[:5]
        ]
        raise ProtocolError(
            f"the server's {kind} instructions do not parse: " + "; ".join(problems),
            "run the same fedsilo version on the server and on every silo",
        ) from None
