"""fedsilo: train one model on data that never leaves its silo.

The public API is what ``__all__`` lists. ``import fedsilo`` loads neither torch, grpc nor ray.
"""

from fedsilo.client.base import Client
from fedsilo.client.metrics import classification_metrics
from fedsilo.client.numpy import NumpyClient
from fedsilo.data.loaders import load_split
from fedsilo.errors import (
    ConfigError,
    DataError,
    FedsiloError,
    PlanError,
    RoundFailed,
    TaskError,
    UpdateRejected,
)
from fedsilo.experiment.config import ExperimentConfig, load_config
from fedsilo.experiment.plan import build_plan
from fedsilo.runtime.launch import run_experiment
from fedsilo.strategy.base import Aggregation, Sampling, Strategy, StrategyState
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.strategy.fedopt import FedOpt
from fedsilo.strategy.fedprox import FedProx
from fedsilo.strategy.robust import Robust
from fedsilo.wire.arrays import (
    ArrayDict,
    BufferLayout,
    WeightedSum,
    from_bytes,
    load_file,
    save_file,
    to_bytes,
)
from fedsilo.wire.instructions import EvaluateInstructions, FitInstructions, StrategyExtras, TrainSettings
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "ArrayDict",
    "BufferLayout",
    "Client",
    "ConfigError",
    "DataError",
    "EvaluateIns",
    "EvaluateInstructions",
    "EvaluateRes",
    "ExperimentConfig",
    "Failure",
    "FedAvg",
    "FedOpt",
    "FedProx",
    "FedsiloError",
    "FitIns",
    "FitInstructions",
    "FitRes",
    "NumpyClient",
    "PlanError",
    "Robust",
    "RoundFailed",
    "Sampling",
    "Strategy",
    "StrategyExtras",
    "StrategyState",
    "TaskError",
    "TrainSettings",
    "UpdateRejected",
    "WeightedSum",
    "build_plan",
    "classification_metrics",
    "from_bytes",
    "load_config",
    "load_file",
    "load_split",
    "run_experiment",
    "save_file",
    "to_bytes",
]
