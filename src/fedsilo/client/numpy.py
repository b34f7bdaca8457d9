"""A client for models written directly in NumPy.

The task supplies pure functions over named arrays: ``train(params, data, settings, rng)`` returns
``(params, metrics)`` and ``evaluate(params, data)`` returns ``(loss, metrics)``. Data is whatever
the task's ``load_data`` returned; its length (or the length of its first element) counts examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedsilo.client.base import nbytes_of
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import EvaluateInstructions, TrainSettings
from fedsilo.wire.messages import clean_metrics

TrainFn = Callable[[ArrayDict, Any, TrainSettings, np.random.Generator], tuple[ArrayDict, dict]]
EvaluateFn = Callable[[ArrayDict, Any], tuple[float, dict]]


def num_examples(data: Any) -> int:
    if isinstance(data, tuple | list) and data and hasattr(data[0], "__len__"):
        return len(data[0])
    return len(data)


class NumpyClient:
    def __init__(
        self,
        parameters: ArrayDict,
        train: TrainFn,
        evaluate: EvaluateFn,
        train_data: Callable[[], Any],
        test_data: Callable[[], Any],
    ) -> None:
        self._params = parameters
        self._train = train
        self._evaluate = evaluate
        self._train_data_fn, self._test_data_fn = train_data, test_data
        self._train_data: Any = None
        self._test_data: Any = None

    def data_bytes(self) -> int:
        return nbytes_of(self._train_data, self._test_data)

    def get_parameters(self) -> ArrayDict:
        return self._params

    def fit(self, parameters: ArrayDict, settings: TrainSettings) -> tuple[ArrayDict, int, dict[str, float]]:
        if self._train_data is None:
            self._train_data = self._train_data_fn()
        params = {k: np.array(v, copy=True) for k, v in parameters.items()}
        new, metrics = self._train(params, self._train_data, settings, np.random.default_rng(settings.seed))
        self._params = new
        return new, num_examples(self._train_data), clean_metrics(metrics)

    def evaluate(
        self, parameters: ArrayDict, instructions: EvaluateInstructions
    ) -> tuple[float, int, dict[str, float]]:
        if self._test_data is None:
            self._test_data = self._test_data_fn()
        loss, metrics = self._evaluate(dict(parameters), self._test_data)
        return float(loss), num_examples(self._test_data), clean_metrics(metrics)
