"""The experiment YAML, as a typed schema with every default in one place.

Unknown keys are errors (a misspelt key must not be silently ignored). Relative paths are
resolved against the YAML file's folder, so an experiment runs the same from any directory.
Every problem in the file is reported at once, each naming its field.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedsilo.errors import ConfigError
from fedsilo.experiment.defaults import default_of
from fedsilo.experiment.privacy_config import CompressionConfig, PrivacyConfig, SecureAggregationConfig
from fedsilo.experiment.silo_sources import expand_silos
from fedsilo.experiment.strategy_config import (
    StrategyConfig,
    dp_refusal,
    resolve_strategy_name,
    secagg_refusal,
    strategy_error,
)
from fedsilo.experiment.strategy_registry import FedAvgConfig
from fedsilo.server.settings import LoopSettings
from fedsilo.wire.instructions import Optimizer, TrainSettings

SILO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_LISTED_PROBLEMS = 10  # 10,000 silos with a bad name must not make a 10,000-part error line


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiloConfig(_Strict):
    name: str
    data: Path = Field(description="This silo's own data folder; its code reads nothing else.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SILO_NAME.match(v) or v == "server":
            raise ValueError("use letters, digits, '_' or '-' (and not 'server')")
        return v


class TrainConfig(_Strict):
    epochs: int = Field(default_of(TrainSettings, "epochs"), ge=1)
    batch_size: int = Field(default_of(TrainSettings, "batch_size"), ge=1)
    optimizer: Optimizer = default_of(TrainSettings, "optimizer")
    lr: float = Field(default_of(TrainSettings, "lr"), gt=0)
    lr_decay: float = Field(
        default_of(TrainSettings, "lr_decay"), gt=0, le=1, description="Multiplies lr after every round."
    )
    momentum: float = Field(default_of(TrainSettings, "momentum"), ge=0, lt=1)
    weight_decay: float = Field(default_of(TrainSettings, "weight_decay"), ge=0)
    device: str = default_of(TrainSettings, "device")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not re.match(r"^cuda:\d+$", v):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return v


class ServerConfig(_Strict):
    data: Path | None = Field(None, description="Server-side test data folder for central evaluation.")
    round_timeout_s: float = Field(
        default_of(LoopSettings, "round_timeout"), gt=0, description="How long a round waits for silos' replies."
    )
    address: str = Field(
        "127.0.0.1:7355", description="HOST:PORT silos connect to in a deployment (written into their kits)."
    )
    wait_timeout_s: float = Field(
        default_of(LoopSettings, "wait_timeout"), gt=0, description="How long to wait for min_available_clients silos."
    )
    evaluate_every: int = Field(
        default_of(LoopSettings, "evaluate_every"),
        ge=1,
        description="Central evaluation (and a task's server hooks) every N rounds; always the last.",
    )
    stall_timeout_s: float = Field(
        60.0, gt=0, description="A transfer with no progress for this long is given up (a slow one is not)."
    )
    heartbeat_s: float = Field(5.0, gt=0, description="How often the server pings each connected silo.")
    failed_rounds_allowed: int = Field(
        default_of(LoopSettings, "failed_rounds_allowed"),
        ge=0,
        description="Rounds in a row that may fail (too few updates) before the run stops; "
        "a failed round keeps the last good model and the run goes on.",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("use HOST:PORT, e.g. fl.example.org:7355")
        return v


class RuntimeConfig(_Strict):
    kind: Literal["simulation", "processes", "ray"] = Field(
        "simulation",
        description="simulation: silos in a worker pool; processes: one OS process per silo over gRPC + mTLS; "
        "ray: the worker pool as actors on a Ray cluster.",
    )
    address: str | None = Field(
        None, description="With kind ray: 'auto' (or HOST:PORT) joins a running cluster; unset starts a local one."
    )
    workers: int | Literal["auto"] = "auto"
    cache_mb: float = Field(
        64.0,
        ge=0,
        description="Memory the simulation's workers may keep silos' loaded data in between rounds, all "
        "together; the least recently used silos' data is dropped first (and read again if sampled again).",
    )

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("use 'auto', 0 (run silos in the main process) or a positive count")
        return v


class PrepareConfig(_Strict):
    """How to make the silos' data folders from a dataset if they do not exist yet."""

    dataset: str = Field(description="A known dataset's name, or a path (with a '/') to a file or image release.")
    method: Literal["iid", "dirichlet", "group", "column"] = "iid"
    alpha: float = Field(0.5, gt=0)
    sizes: list[float] | None = None
    groups_key: str | None = None
    column: str | None = Field(None, description="With method column: the column naming each row's silo (its site).")
    label_column: str | None = Field(None, description="With method column: the label column, for class counts.")
    image_size: int = Field(28, ge=4, le=600, description="With method column on an image release: pixels per side.")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    out: Path


class TrackingConfig(_Strict):
    """Where runs are logged besides the run folder (see tracking/mlflow.py)."""

    mlflow: bool | str = Field(
        False,
        description="true: MLflow in mlruns/ beside `output`; a folder; or a tracking URI (http://..., sqlite:///...).",
    )
    experiment: str | None = Field(None, min_length=1, description="MLflow experiment name (default: name).")

    @field_validator("mlflow")
    @classmethod
    def _mlflow(cls, v: bool | str) -> bool | str:
        if isinstance(v, str) and not v.strip():
            raise ValueError("use true, a folder or a tracking URI")
        return v


class ExperimentConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Path
    silos: list[SiloConfig] = Field(min_length=1)
    server: ServerConfig = Field(default_factory=ServerConfig)
    strategy: StrategyConfig = Field(default_factory=FedAvgConfig)
    rounds: int = Field(ge=1)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = 0
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    output: Path = Path("runs")
    prepare: PrepareConfig | None = None
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)

    @model_validator(mode="after")
    def _unique_silos(self) -> ExperimentConfig:
        dupes = sorted(n for n, count in Counter(s.name for s in self.silos).items() if count > 1)
        if dupes:
            raise ValueError(f"silo names must be unique; repeated: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _privacy_fits_the_rest(self) -> ExperimentConfig:
        if self.privacy.secure_aggregation is None:
            return self
        problems = []
        if self.strategy.individual_updates:  # None for a strategy of your own: the plan asks its class
            problems.append(secagg_refusal(self.strategy.name))
        if self.compression.codec not in ("none",):
            problems.append(
                f"compression.codec={self.compression.codec} is not linear, so masked sums of it are meaningless "
                "(set compression.codec: none, or ring_bits: 32 to halve the masked update)"
            )
        if self.privacy.dp is not None and self.privacy.dp.adaptive:
            problems.append(
                "privacy.dp.adaptive needs each silo's clipped/unclipped bit, which secure aggregation hides "
                "(set privacy.dp.adaptive: false and pick clip_norm)"
            )
        problems.extend(_secagg_setting_problems(self.privacy.secure_aggregation, len(self.silos)))
        if len(self.silos) < 3:
            n = len(self.silos)
            problems.append(f"secure aggregation needs at least 3 silos (with {n}, each learns the others')")
        if problems:
            raise ValueError("privacy.secure_aggregation: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _dp_and_codecs_fit_the_rest(self) -> ExperimentConfig:
        problems = []
        if self.privacy.dp is not None and self.strategy.individual_updates:
            problems.append(dp_refusal(self.strategy.name))
        if self.compression.codec == "topk" and self.compression.topk_fraction > 0.5:
            problems.append(
                f"compression.topk_fraction={self.compression.topk_fraction} sends values and indices, more bytes "
                "than the plain update (use at most 0.5, or codec none)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def train_settings(self) -> TrainSettings:
        """The ``train:`` section as the settings a silo's client trains with (seeded with ``seed``)."""
        return TrainSettings(**self.train.model_dump(), seed=self.seed)


def _secagg_setting_problems(sa: SecureAggregationConfig, silos: int) -> list[str]:
    """What would make every secure round fail: caught here, before any training."""
    problems = []
    group = silos if sa.neighbours is None or sa.neighbours >= silos - 1 else sa.neighbours + 1
    if sa.threshold is not None and sa.threshold > group:
        problems.append(f"threshold={sa.threshold} is more than the {group} share holders of each silo")
    if sa.neighbours is not None and sa.neighbours % 2:
        problems.append(f"neighbours={sa.neighbours} must be even")
    if silos * math.ceil(sa.clip * 2**sa.frac_bits) > 2 ** (sa.ring_bits - 1) - 1:
        problems.append(
            f"{silos} silos x clip={sa.clip} x 2^frac_bits={sa.frac_bits} overflows the {sa.ring_bits}-bit ring "
            "(lower clip or frac_bits)"
        )
    return problems


def _resolve(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative paths absolute against the YAML's folder (before validation)."""

    def fix(value: Any) -> Any:
        return (
            str((base / value).resolve())
            if isinstance(value, str) and value and not Path(value).is_absolute()
            else value
        )

    out = dict(data)
    for key in ("task", "output"):
        if key in out:
            out[key] = fix(out[key])
    if "strategy" in out:
        out["strategy"] = resolve_strategy_name(out["strategy"], fix)  # FILE.py:ClassName of your own
    if isinstance(out.get("silos"), list):
        out["silos"] = [
            {**s, "data": fix(s["data"])} if isinstance(s, dict) and "data" in s else s for s in out["silos"]
        ]
    for section, key in (("server", "data"), ("prepare", "out")):
        if isinstance(out.get(section), dict) and key in out[section]:
            out[section] = {**out[section], key: fix(out[section][key])}
    prepare = out.get("prepare")
    if isinstance(prepare, dict) and isinstance(prepare.get("dataset"), str) and "/" in prepare["dataset"]:
        out["prepare"] = {**prepare, "dataset": fix(prepare["dataset"])}  # a path, not a dataset's name
    mlflow = out["tracking"].get("mlflow") if isinstance(out.get("tracking"), dict) else None
    if isinstance(mlflow, str) and mlflow.strip() and ":" not in mlflow and mlflow != "databricks":  # a folder
        out["tracking"] = {**out["tracking"], "mlflow": fix(mlflow)}
    return out


def validation_problems(exc: ValidationError, skip_missing_silos: bool = False) -> list[str]:
    """Each problem as ``field.path: message`` (the first few, when many are alike)."""
    parts = []
    errors = [e for e in exc.errors() if not (skip_missing_silos and e["loc"] == ("silos",))]
    for err in errors[:MAX_LISTED_PROBLEMS]:
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        if (clearer := strategy_error(err["loc"], err)) is not None:
            loc, msg = ".".join(str(p) for p in clearer[0]), clearer[1]
        parts.append(f"{loc}: {msg}")
    if len(errors) > MAX_LISTED_PROBLEMS:
        parts.append(f"and {len(errors) - MAX_LISTED_PROBLEMS} more problem(s)")
    return parts


def parse_config(data: Any, base: Path, source: str = "experiment") -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys at the top level", "see examples/pneumonia/experiment.yaml"
        )
    data = dict(data)
    problems = []
    if isinstance(data.get("silos"), dict):  # the compact form; its problems join the others
        try:
            data["silos"] = expand_silos(data["silos"], base)
        except ConfigError as exc:
            problems.append(exc.one_line())
            del data["silos"]
    try:
        config = ExperimentConfig.model_validate(_resolve(data, base))
    except ValidationError as exc:
        problems += validation_problems(exc, skip_missing_silos=bool(problems))
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems), "fix these fields in the YAML")
    return config


def load_config(path: Path) -> tuple[ExperimentConfig, str]:
    """Read and validate an experiment YAML; returns the config and the file's text."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {path} does not exist", "pass the path of an experiment YAML")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})", "fix the YAML syntax") from None
    return parse_config(data, path.resolve().parent, str(path)), text
