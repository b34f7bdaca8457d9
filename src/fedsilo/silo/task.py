"""Loading and checking the user's task module (the model and how to read a silo's data).

It runs where the data is: in a silo, and on the server for its own test data and initial model.

A task module defines:

- ``model()`` (required): a ``torch.nn.Module`` for PyTorch tasks, a dict of numpy arrays
  (the initial parameters) for NumPy tasks, or a scikit-learn linear model (e.g.
  ``LogisticRegression()``). It may take one argument, a seeded numpy Generator.
- ``N_FEATURES`` and, for classifiers, ``CLASSES`` (scikit-learn tasks): the number of input
  columns and every label of the federation, so the server can build the initial (all-zero)
  model without data, since an unfitted estimator has no parameters yet.
- ``load_data(folder, split)`` (optional): the data of one silo's folder for ``split`` ("train"
  or "test"), as ``(x, y)`` arrays or a torch Dataset. The default reads ``<folder>/<split>.npz``
  as written by ``fedsilo data split``.
- ``loss()`` (optional, PyTorch): the training loss module; cross-entropy by default.
- ``fit(model, data, settings) -> metrics`` and ``evaluate(model, data) -> (loss, metrics)``
  (optional, PyTorch): the task's own local training and evaluation instead of the supervised
  loop (a GAN, several optimizers, custom metrics). ``data`` is ``(x, y)`` as tensors on the
  device (or the task's Dataset), ``settings`` the ``TrainSettings`` of the round.
- ``server_evaluate(model, data, round) -> metrics`` and ``samples(model, rng) -> {label: images}``
  (optional, PyTorch): what the server computes from the global model on ``server.data``'s test
  split every ``server.evaluate_every`` rounds, instead of the supervised evaluation; the sample
  images are saved as a PNG grid in the run folder and shown in the report.
- ``train(params, data, settings, rng)`` and ``evaluate(params, data)`` (required for NumPy tasks).

The framework is told by what ``model()`` returns; torch and scikit-learn are imported only if the
task imports them.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fedsilo.client.base import Client
from fedsilo.client.numpy import NumpyClient
from fedsilo.data.loaders import check_finite, load_split, require_folder
from fedsilo.errors import FedsiloError, TaskError, describe
from fedsilo.wire.arrays import ArrayDict

TORCH, NUMPY, SKLEARN = "torch", "numpy", "sklearn"


def import_task_module(path: Path) -> ModuleType:
    path = Path(path)
    if not path.is_file():
        raise TaskError(
            f"task module {path} does not exist",
            "set `task:` in the experiment YAML to your task.py (relative to the YAML)",
        )
    name = f"fedsilo_task_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"task module {path} cannot be imported", "it must be a Python file ending in .py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # lets a task import helpers that sit beside it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise TaskError(
            f"task module {path} failed to import: {type(exc).__name__}: {exc}",
            "run `python " + str(path) + "` to see the full error",
        ) from exc
    finally:
        sys.path.remove(str(path.parent))
    sys.modules[name] = module
    return module


def _countable(data: Any) -> bool:
    """Whether a silo's examples can be counted: ``(x, y, ...)`` of sized parts, or a sized Dataset."""
    if isinstance(data, tuple | list):
        return bool(data) and hasattr(data[0], "__len__")
    return hasattr(data, "__len__")


def _pool(parts: Sequence[Any]) -> Any:
    """Concatenate several silos' ``(x, y)`` data (the centralized baseline's pooled data)."""
    if len(parts) == 1:
        return parts[0]
    if not all(isinstance(p, tuple | list) and len(p) == 2 for p in parts):
        raise TaskError(
            "pooling silos' data needs load_data to return (x, y) arrays",
            "return (x, y) from load_data, or run without --baselines",
        )
    return tuple(np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(2))


@dataclass(frozen=True)
class TaskModule:
    """The user's task module, imported once: builds the model, reads a silo's data, makes its client."""

    path: Path
    module: ModuleType

    @classmethod
    def load(cls, path: Path) -> TaskModule:
        task = cls(Path(path).resolve(), import_task_module(path))
        if not callable(getattr(task.module, "model", None)):
            raise TaskError(
                f"task module {path} defines no model() function",
                "add `def model():` returning your torch.nn.Module or a dict of numpy arrays",
            )
        return task

    def build_model(self, seed: int) -> Any:
        """The model, initialised reproducibly from ``seed``."""
        if "torch" in sys.modules:
            from fedsilo.client.torch import seed_torch

            seed_torch(seed)
        fn = self.module.model
        try:
            model = fn(np.random.default_rng(seed)) if inspect.signature(fn).parameters else fn()
        except Exception as exc:
            raise TaskError(
                f"model() in {self.path} raised {describe(exc)}",
                "fix model() in the task module (FEDSILO_DEBUG=1 shows the traceback)",
            ) from exc
        if self.framework_of(model) is None:
            raise TaskError(
                f"model() in {self.path} returned {type(model).__name__}",
                "return a torch.nn.Module, a scikit-learn linear model, or a dict of name -> numpy array",
            )
        return model

    @staticmethod
    def framework_of(model: Any) -> str | None:
        if hasattr(model, "fit") and any(c.__module__.split(".")[0] == "sklearn" for c in type(model).__mro__):
            return SKLEARN  # told by class, so sklearn is not imported for other tasks
        if hasattr(model, "state_dict") and hasattr(model, "parameters"):
            return TORCH
        if isinstance(model, dict) and model and all(isinstance(v, np.ndarray) for v in model.values()):
            return NUMPY
        return None

    def initial_parameters(self, seed: int) -> ArrayDict:
        return self.parameters_of(self.build_model(seed))

    def parameters_of(self, model: Any) -> ArrayDict:
        if self.framework_of(model) == TORCH:
            from fedsilo.client.torch import get_parameters

            return get_parameters(model)
        if self.framework_of(model) == SKLEARN:
            from fedsilo.client import sklearn as sklearn_client

            if hasattr(model, "coef_"):  # already fitted: start the federation from it
                return sklearn_client.get_parameters(model)
            return sklearn_client.initial_parameters(model, *self.sklearn_shape())
        return {k: np.asarray(v) for k, v in model.items()}

    def sklearn_shape(self) -> tuple[int, Any]:
        """``(N_FEATURES, CLASSES)`` of a scikit-learn task: the model's shape before any data."""
        n = getattr(self.module, "N_FEATURES", None)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise TaskError(
                f"scikit-learn task {self.path} needs N_FEATURES, its number of input columns (got {n!r})",
                "add e.g. `N_FEATURES = 30` to the task module",
            )
        return n, getattr(self.module, "CLASSES", None)  # checked by the client

    def load_data(self, folders: Sequence[Path], split: str) -> Any:
        """Each folder's ``split`` as the task reads it, checked (countable, finite), then pooled."""
        parts = []
        for folder in folders:
            data = self._load_one(require_folder(folder, self.needs_folders), split)
            check_finite(data, folder, split)
            parts.append(data)
        return _pool(parts)

    @property
    def needs_folders(self) -> bool:
        """Whether a silo's ``data:`` must be a folder: yes for the default loader; a task's own
        ``load_data`` may read a file (one CSV per silo)."""
        return getattr(self.module, "load_data", None) is None

    def _load_one(self, folder: Path, split: str) -> Any:
        own = getattr(self.module, "load_data", None)
        if own is None:
            return load_split(folder, split)
        call = f"load_data({folder}, {split!r}) in {self.path}"
        try:
            data = own(folder, split)
        except FedsiloError:
            raise
        except Exception as exc:
            raise TaskError(
                f"{call} raised {describe(exc)}",
                "fix load_data in the task module, or the silo's data (FEDSILO_DEBUG=1 shows the traceback)",
            ) from exc
        if not _countable(data):
            raise TaskError(
                f"{call} returned {type(data).__name__}",
                "return (x, y) arrays, or a Dataset with a length (len(dataset) examples)",
            )
        return data

    def hook(self, name: str) -> Any:
        """The task's optional function ``name``, or None."""
        fn = getattr(self.module, name, None)
        return fn if callable(fn) else None

    def make_client(self, folders: Sequence[Path], seed: int, device: str = "auto", model: Any = None) -> Client:
        """A client over ``folders`` (one silo's folder; several only for the pooled baseline).

        Pass ``model`` to reuse one model object for many silos in a worker.
        """
        model = model if model is not None else self.build_model(seed)
        folders = [Path(f) for f in folders]

        def train() -> Any:
            return self.load_data(folders, "train")

        def test() -> Any:
            return self.load_data(folders, "test")

        if self.framework_of(model) == TORCH:
            from fedsilo.client.torch import TorchClient

            loss = self.module.loss() if callable(getattr(self.module, "loss", None)) else None
            fit, evaluate = self.hook("fit"), self.hook("evaluate")
            return TorchClient(model, train, test, loss=loss, device=device, fit_hook=fit, evaluate_hook=evaluate)
        if self.framework_of(model) == SKLEARN:
            from fedsilo.client.sklearn import SklearnClient

            return SklearnClient(model, train, test, *self.sklearn_shape())
        for fn in ("train", "evaluate"):
            if not callable(getattr(self.module, fn, None)):
                raise TaskError(
                    f"NumPy task {self.path} defines no {fn}() function",
                    "a NumPy task needs train(params, data, settings, rng) and evaluate(params, data)",
                )
        return NumpyClient(model, self.module.train, self.module.evaluate, train, test)
