"""silo/agent.py: checks what the server sent, runs the client, and always answers."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsilo.client.base import silo_seed
from fedsilo.client.numpy import NumpyClient
from fedsilo.errors import DataError
from fedsilo.silo.agent import SiloAgent, describe
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import FitInstructions, TrainSettings
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes


def model() -> ArrayDict:
    return {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}


class Task:
    """Plain train/evaluate functions that remember how they were called."""

    def __init__(self, fail: BaseException | None = None, metrics: dict[str, float] | None = None) -> None:
        self.fail = fail
        self.metrics = metrics if metrics is not None else {"train_loss": 0.5}
        self.settings: list[TrainSettings] = []
        self.evaluated = 0

    def train(self, params: ArrayDict, data: Any, settings: TrainSettings, rng: np.random.Generator):
        self.settings.append(settings)
        if self.fail is not None:
            raise self.fail
        return {k: v + 1 for k, v in params.items()}, self.metrics

    def evaluate(self, params: ArrayDict, data: Any):
        self.evaluated += 1
        if self.fail is not None:
            raise self.fail
        return 0.75, {"accuracy": 0.5}

    def agent(self, name: str = "hospital_a", n: int = 4) -> SiloAgent:
        data = (np.zeros((n, 2)), np.zeros(n))
        return SiloAgent(name, lambda: NumpyClient(model(), self.train, self.evaluate, lambda: data, lambda: data))


def test_fit_returns_the_clients_update() -> None:
    reply = Task().agent().fit(FitIns(1, model(), FitInstructions(TrainSettings(seed=3))))
    assert isinstance(reply, FitRes)
    assert reply.silo == "hospital_a" and reply.num_examples == 4
    np.testing.assert_array_equal(reply.parameters["w"], np.ones((2, 2)))
    assert dict(reply.metrics) == {"train_loss": 0.5}


def test_an_exception_in_user_code_becomes_a_failure_with_one_line() -> None:
    reply = Task(fail=RuntimeError("CUDA out of memory")).agent().fit(FitIns(1, model()))
    assert isinstance(reply, Failure)
    assert reply.silo == "hospital_a" and reply.kind == "error"
    assert reply.reason.startswith("RuntimeError: CUDA out of memory (at ")
    assert "test_agent.py:" in reply.reason  # where in user code it happened
    assert "\n" not in reply.reason


def test_a_multi_line_exception_message_still_gives_one_line() -> None:
    # Real libraries raise multi-line messages (e.g. torch's load_state_dict size mismatches);
    # a Failure's reason is printed and logged as one line.
    error = RuntimeError("Error(s) in loading state_dict for Linear:\n\tsize mismatch for weight")
    reply = Task(fail=error).agent().fit(FitIns(1, model()))
    assert isinstance(reply, Failure)
    assert "\n" not in reply.reason
    assert "size mismatch for weight" in reply.reason


def test_a_failing_client_constructor_becomes_a_failure() -> None:
    def broken() -> NumpyClient:
        raise DataError("silo data folder /x does not exist", "run `fedsilo data split`")

    agent = SiloAgent("hospital_b", broken)
    fit = agent.fit(FitIns(1, model()))
    evaluate = agent.evaluate(EvaluateIns(1, model()))
    for reply in (fit, evaluate):
        assert isinstance(reply, Failure)
        assert reply.reason == "silo data folder /x does not exist -> run `fedsilo data split`"


def test_evaluate_errors_become_failures() -> None:
    reply = Task(fail=KeyError("x")).agent().evaluate(EvaluateIns(1, model()))
    assert isinstance(reply, Failure) and reply.reason.startswith("KeyError: 'x'")


def test_a_global_model_of_the_wrong_shape_is_refused_before_training() -> None:
    task = Task()
    agent = task.agent()
    bad = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    fit = agent.fit(FitIns(1, bad))
    evaluate = agent.evaluate(EvaluateIns(1, bad))
    for reply in (fit, evaluate):
        assert isinstance(reply, Failure)
        assert "the global model from the server does not match this silo's model" in reply.reason
        assert "w: shape (3, 2), expected (2, 2)" in reply.reason
    assert task.settings == [] and task.evaluated == 0  # user code never saw the bad model


def test_a_global_model_with_missing_or_nan_arrays_is_refused() -> None:
    agent = Task().agent()
    missing = agent.fit(FitIns(1, {"w": np.zeros((2, 2), np.float32)}))
    assert isinstance(missing, Failure) and "missing arrays ['b']" in missing.reason
    nan = agent.fit(FitIns(1, {"w": np.full((2, 2), np.nan, np.float32), "b": np.zeros(2, np.float32)}))
    assert isinstance(nan, Failure) and "non-finite" in nan.reason


def test_fit_derives_a_per_silo_per_round_seed_and_passes_the_round() -> None:
    task = Task()
    a, b = task.agent("a"), task.agent("b")
    a.fit(FitIns(2, model(), FitInstructions(TrainSettings(seed=9, lr=0.3))))
    b.fit(FitIns(2, model(), FitInstructions(TrainSettings(seed=9, lr=0.3))))
    a.fit(FitIns(3, model(), FitInstructions(TrainSettings(seed=9, lr=0.3))))
    a.fit(FitIns(0, model(), FitInstructions(TrainSettings(seed=9))))  # baselines train at "round 0"
    seeds = [s.seed for s in task.settings]
    assert seeds[:3] == [silo_seed(9, 2, "a"), silo_seed(9, 2, "b"), silo_seed(9, 3, "a")]
    assert len(set(seeds[:3])) == 3
    assert [s.round for s in task.settings] == [2, 2, 3, 1]
    assert task.settings[0].lr == 0.3


def test_silo_seed_is_stable_and_in_range() -> None:
    assert silo_seed(0, 1, "a") == silo_seed(0, 1, "a")
    assert silo_seed(0, 1, "a") != silo_seed(1, 1, "a")
    assert 0 <= silo_seed(123, 45, "hospital_c") < 2**31


def test_non_finite_metrics_are_dropped_from_replies() -> None:
    reply = Task(metrics={"train_loss": float("nan"), "acc": 0.5}).agent().fit(FitIns(1, model()))
    assert isinstance(reply, FitRes) and dict(reply.metrics) == {"acc": 0.5}


def test_evaluate_returns_loss_examples_metrics() -> None:
    reply = Task().agent(n=6).evaluate(EvaluateIns(1, model()))
    assert isinstance(reply, EvaluateRes)
    assert (reply.loss, reply.num_examples, dict(reply.metrics)) == (0.75, 6, {"accuracy": 0.5})


def test_the_client_is_built_once_and_lazily() -> None:
    built: list[int] = []
    task = Task()
    data = (np.zeros((2, 2)), np.zeros(2))

    def make() -> NumpyClient:
        built.append(1)
        return NumpyClient(model(), task.train, task.evaluate, lambda: data, lambda: data)

    agent = SiloAgent("a", make)
    assert built == []
    agent.fit(FitIns(1, model()))
    agent.evaluate(EvaluateIns(1, model()))
    assert built == [1]


def test_describe_of_a_bare_exception() -> None:
    assert describe(ValueError("no traceback")) == "ValueError: no traceback"
