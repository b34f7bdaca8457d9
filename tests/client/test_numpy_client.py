"""client/numpy.py: a NumPy task's functions wrapped as a client."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedsilo.client.numpy import NumpyClient, num_examples
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import EvaluateInstructions, TrainSettings


def test_fit_copies_the_global_model_and_counts_examples() -> None:
    loads: list[str] = []
    got_settings: list[TrainSettings] = []

    def train(params: ArrayDict, data: Any, settings: TrainSettings, rng: np.random.Generator):
        got_settings.append(settings)
        params["w"] += 1.0  # in place: must not touch the caller's arrays
        return params, {"train_loss": 0.5, "bad": float("inf"), "note": "x"}

    def load(split: str, n: int) -> Any:
        loads.append(split)
        return (np.zeros((n, 3)), np.zeros(n))

    client = NumpyClient(
        {"w": np.zeros(2)}, train, lambda p, d: (1.0, {}), lambda: load("train", 7), lambda: load("test", 3)
    )
    global_model = {"w": np.array([1.0, 2.0])}
    new, n, metrics = client.fit(global_model, TrainSettings(lr=0.2, epochs=3, seed=5))
    np.testing.assert_array_equal(global_model["w"], [1.0, 2.0])
    np.testing.assert_array_equal(new["w"], [2.0, 3.0])
    assert n == 7
    assert metrics == {"train_loss": 0.5}
    assert (got_settings[0].lr, got_settings[0].epochs, got_settings[0].seed) == (0.2, 3, 5)
    np.testing.assert_array_equal(client.get_parameters()["w"], [2.0, 3.0])

    client.fit(global_model, TrainSettings())
    assert loads == ["train"]  # data is loaded once, lazily, and kept
    assert client.evaluate(global_model, EvaluateInstructions())[1] == 3
    client.evaluate(global_model, EvaluateInstructions())
    assert loads == ["train", "test"]


def test_the_generator_is_seeded_from_the_config() -> None:
    def train(params: ArrayDict, data: Any, settings: TrainSettings, rng: np.random.Generator):
        return {"w": rng.normal(size=3)}, {}

    data = (np.zeros((2, 1)), np.zeros(2))
    client = NumpyClient({"w": np.zeros(3)}, train, lambda p, d: (0.0, {}), lambda: data, lambda: data)
    first, _, _ = client.fit({"w": np.zeros(3)}, TrainSettings(seed=42))
    again, _, _ = client.fit({"w": np.zeros(3)}, TrainSettings(seed=42))
    other, _, _ = client.fit({"w": np.zeros(3)}, TrainSettings(seed=43))
    np.testing.assert_array_equal(first["w"], again["w"])
    np.testing.assert_array_equal(first["w"], np.random.default_rng(42).normal(size=3))
    assert not np.array_equal(first["w"], other["w"])


def test_evaluate_returns_float_loss_count_and_clean_metrics() -> None:
    data = (np.zeros((4, 1)), np.zeros(4))
    client = NumpyClient(
        {"w": np.zeros(1)},
        lambda p, d, s, r: (p, {}),
        lambda p, d: (np.float32(0.5), {"accuracy": np.float64(0.75), "nan": np.nan}),
        lambda: data,
        lambda: data,
    )
    loss, n, metrics = client.evaluate({"w": np.zeros(1)}, EvaluateInstructions())
    assert type(loss) is float and loss == 0.5
    assert n == 4 and metrics == {"accuracy": 0.75}


@pytest.mark.parametrize(
    ("data", "expected"),
    [((np.zeros((5, 2)), np.zeros(5)), 5), ([np.zeros(3), np.zeros(3)], 3), (np.zeros((4, 2)), 4), (list(range(6)), 6)],
)
def test_num_examples(data: Any, expected: int) -> None:
    assert num_examples(data) == expected
