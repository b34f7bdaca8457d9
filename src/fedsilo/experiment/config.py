"""The experiment YAML, as a typed schema with every default in one place (its sections in sections.py).

Unknown keys are errors (a misspelt key must not be silently ignored). Relative paths are
resolved against the YAML file's folder, so an experiment runs the same from any directory.
Every problem in the file is reported at once, each naming its field.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from fedsilo.errors import ConfigError
from fedsilo.experiment.bounds import count_field, seed_field
from fedsilo.experiment.privacy_config import CompressionConfig, PrivacyConfig, SecureAggregationConfig
from fedsilo.experiment.sections import (
    PrepareConfig,
    RuntimeConfig,
    ServerConfig,
    SiloConfig,
    StrictModel,
    TrackingConfig,
    TrainConfig,
)
from fedsilo.experiment.silo_sources import expand_silos
from fedsilo.experiment.strategy_config import (
    StrategyConfig,
    dp_refusal,
    resolve_strategy_name,
    secagg_refusal,
    strategy_error,
)
from fedsilo.experiment.strategy_registry import FedAvgConfig
from fedsilo.wire.instructions import TrainSettings

MAX_LISTED_PROBLEMS = 10  # 10,000 silos with a bad name must not make a 10,000-part error line


class ExperimentConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Path
    silos: list[SiloConfig] = Field(min_length=1)
    server: ServerConfig = Field(default_factory=ServerConfig)
    strategy: StrategyConfig = Field(default_factory=FedAvgConfig)
    rounds: int = count_field()
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: int = seed_field()
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
