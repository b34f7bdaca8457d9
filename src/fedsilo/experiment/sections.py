"""The experiment YAML's sections other than privacy and strategy: silos, train, server, runtime, prepare, tracking.

Unknown keys are errors (a misspelt key must not be silently ignored); defaults that a Python type
also has are read from it (:func:`~fedsilo.experiment.defaults.default_of`), so they cannot differ.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from fedsilo.experiment.bounds import MAX_WAIT_S, MAX_WORKERS, YAML_MODEL, count_field, seed_field, wait_field
from fedsilo.experiment.defaults import default_of
from fedsilo.server.settings import LoopSettings
from fedsilo.transport.timing import HEARTBEAT_S, MIN_UPLOAD_RATE, STALL_TIMEOUT_S, TRANSFER_GRACE_S
from fedsilo.wire.instructions import Optimizer, TrainSettings

SILO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class StrictModel(BaseModel):
    model_config = YAML_MODEL


class SiloConfig(StrictModel):
    name: str
    data: Path = Field(description="This silo's own data folder; its code reads nothing else.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SILO_NAME.match(v) or v == "server":
            raise ValueError("use letters, digits, '_' or '-' (and not 'server')")
        return v


class TrainConfig(StrictModel):
    epochs: int = count_field(default_of(TrainSettings, "epochs"))
    batch_size: int = count_field(default_of(TrainSettings, "batch_size"))
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


class ServerConfig(StrictModel):
    data: Path | None = Field(None, description="Server-side test data folder for central evaluation.")
    round_timeout_s: float = wait_field(
        default_of(LoopSettings, "round_timeout"), "How long a round waits for silos' replies."
    )
    address: str = Field(
        "127.0.0.1:7355", description="HOST:PORT silos connect to in a deployment (written into their kits)."
    )
    wait_timeout_s: float = wait_field(
        default_of(LoopSettings, "wait_timeout"), "How long to wait for min_available_clients silos."
    )
    evaluate_every: int = count_field(
        default_of(LoopSettings, "evaluate_every"),
        description="Central evaluation (and a task's server hooks) every N rounds; always the last.",
    )
    stall_timeout_s: float = wait_field(
        STALL_TIMEOUT_S, "A transfer with no progress for this long is given up (a slow one is not)."
    )
    transfer_grace_s: float = Field(
        TRANSFER_GRACE_S,
        ge=0,
        le=MAX_WAIT_S,
        description="How much longer than round_timeout_s an upload still arriving may hold the round; then it is cut.",
    )
    min_upload_rate: float = Field(
        MIN_UPLOAD_RATE,
        gt=0,
        le=1e12,
        description="Bytes per second an upload must average since it began to be waited for past round_timeout_s.",
    )
    heartbeat_s: float = wait_field(HEARTBEAT_S, "How often the server pings each connected silo.")
    failed_rounds_allowed: int = count_field(
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


class RuntimeConfig(StrictModel):
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
        if isinstance(v, int) and not 0 <= v <= MAX_WORKERS:
            raise ValueError(f"use 'auto', 0 (run silos in the main process) or a count up to {MAX_WORKERS}")
        return v


class PrepareConfig(StrictModel):
    """How to make the silos' data folders from a dataset if they do not exist yet."""

    dataset: str = Field(description="A known dataset's name, or a path (with a '/') to a file or image release.")
    method: Literal["iid", "dirichlet", "group", "column"] = "iid"
    alpha: float = Field(0.5, gt=0)
    sizes: list[Annotated[float, Field(gt=0)]] | None = None
    groups_key: str | None = None
    column: str | None = Field(None, description="With method column: the column naming each row's silo (its site).")
    label_column: str | None = Field(None, description="With method column: the label column, for class counts.")
    image_size: int = Field(28, ge=4, le=600, description="With method column on an image release: pixels per side.")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = seed_field()
    out: Path


class TrackingConfig(StrictModel):
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
