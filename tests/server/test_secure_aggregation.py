"""Secure aggregation in the server loop over the in-process transport, with real agents and NumPy clients.

Each silo's training returns a fixed model, so the FedAvg mean of the survivors is known by hand;
a secure round must give it to the fixed-point precision (2^-32 per value), and a silo that dies at
a step must leave the survivors' mean (or fail the round, model unchanged, below the threshold).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedsilo.client.base import TrainSettings
from fedsilo.client.numpy import NumpyClient
from fedsilo.errors import RoundFailed
from fedsilo.server.loop import ServerLoop
from fedsilo.server.secure_aggregation import SecAggSettings
from fedsilo.server.settings import LoopSettings
from fedsilo.silo.agent import SiloAgent
from fedsilo.strategy.base import Sampling
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.strategy.fedopt import FedOpt
from fedsilo.tracking.rows import MetricRow
from fedsilo.transport.inproc import InProcessTransport
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.messages import EvaluateIns, EvaluateRes, Failure, FitIns, FitRes

pytest.importorskip("cryptography")

MODELS = {  # silo -> (train examples, the model its training returns)
    "a": (10, {"w": [1.0, 2.0, 3.0], "b": [0.5]}),
    "b": (30, {"w": [-1.0, 0.0, 4.0], "b": [-0.25]}),
    "c": (20, {"w": [2.0, -3.0, 0.5], "b": [1.0]}),
    "d": (40, {"w": [0.25, 1.0, -2.0], "b": [2.0]}),
}


def initial() -> ArrayDict:
    return {"w": np.array([0.1, 0.2, 0.3], np.float32), "b": np.array([0.0], np.float32)}


def agent(name: str) -> SiloAgent:
    n, model = MODELS[name]

    def train(params: ArrayDict, data: Any, settings: TrainSettings, rng: np.random.Generator):
        return {k: np.array(v, np.float32) for k, v in model.items()}, {"train_loss": 0.5}

    def evaluate(params: ArrayDict, data: Any):
        return 1.0, {"accuracy": 0.5}

    data = (np.zeros((n, 1)), np.zeros(n))
    return SiloAgent(name, lambda: NumpyClient(initial(), train, evaluate, lambda: data, lambda: data))


class DiesAt:
    """A real agent whose process 'dies' at one protocol step: from then on it answers nothing useful."""

    def __init__(self, inner: SiloAgent, step: str) -> None:
        self.inner, self.step, self.dead = inner, step, False

    def fit(self, ins: FitIns) -> FitRes | Failure:
        return self.inner.fit(ins)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes | Failure:
        return self.inner.evaluate(ins)

    def exchange(self, step: str, payload: bytes) -> bytes | Failure:
        self.dead = self.dead or step == self.step
        if self.dead:
            return Failure(self.inner.name, "connection lost", "disconnected")
        return self.inner.exchange(step, payload)


def fedavg_of(names: list[str]) -> ArrayDict:
    """The example-weighted mean of the named silos' models, by hand."""
    total = sum(MODELS[s][0] for s in names)
    return {k: sum(MODELS[s][0] * np.array(MODELS[s][1][k], np.float64) for s in names) / total for k in ("w", "b")}


def run(agents: dict[str, Any], secagg: SecAggSettings | None, strategy: Any = None, min_fit: int = 2):
    strategy = strategy or FedAvg(Sampling(min_fit_clients=min_fit, min_available_clients=len(agents)))
    settings = LoopSettings(rounds=1, seed=0, secure_aggregation=secagg)
    loop = ServerLoop(InProcessTransport(agents), strategy, settings)
    return loop.run(initial(), strategy.initial_state(initial())).parameters


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_round_start(self, round: int, silos: Any) -> None: ...
    def on_reply(self, round: int, phase: str, reply: Any) -> None: ...
    def on_metrics(self, row: MetricRow) -> None:
        self.rows.append(row.to_json())  # as metrics.jsonl holds it

    def on_round_end(self, round: int, rows: Any) -> None: ...


def test_secure_fedavg_equals_plain_fedavg_to_fixed_point_precision() -> None:
    names = list(MODELS)
    plain = run({s: agent(s) for s in names}, None)
    secure = run({s: agent(s) for s in names}, SecAggSettings())
    expected = fedavg_of(names)
    for k in expected:
        np.testing.assert_allclose(plain[k], expected[k], atol=1e-6)
        np.testing.assert_allclose(secure[k], plain[k], atol=1e-6)
        assert secure[k].dtype == np.float32


@pytest.mark.parametrize("step", ["share_keys", "masked_input", "unmask"])
def test_a_silo_dying_mid_protocol_leaves_the_survivors_mean(step: str) -> None:
    agents: dict[str, Any] = {s: agent(s) for s in MODELS}
    agents["b"] = DiesAt(agent("b"), step)
    observer = Rows()
    strategy = FedAvg(Sampling(min_fit_clients=2, min_available_clients=4))
    loop = ServerLoop(InProcessTransport(agents), strategy, LoopSettings(1, secure_aggregation=SecAggSettings()),
                      observers=[observer])  # fmt: skip
    params = loop.run(initial(), strategy.initial_state(initial())).parameters
    # dying after sending its masked input (at unmask) leaves b's update in the sum
    expected = fedavg_of(list(MODELS) if step == "unmask" else ["a", "c", "d"])
    for k in expected:
        np.testing.assert_allclose(params[k], expected[k], atol=1e-6)
    secagg_rows = {r["silo"]: r for r in observer.rows if r.get("phase") == "secagg"}
    assert set(secagg_rows) == set(MODELS)
    assert secagg_rows["b"]["failure"].startswith(f"dropped at {step}")
    assert all("failure" not in secagg_rows[s] for s in "acd")
    assert secagg_rows["a"]["secagg_sent_bytes"] > 0 and secagg_rows["a"]["secagg_received_bytes"] > 0


def two_die_before_masking() -> dict[str, Any]:
    agents: dict[str, Any] = {s: agent(s) for s in MODELS}
    agents["a"] = DiesAt(agent("a"), "masked_input")
    agents["b"] = DiesAt(agent("b"), "masked_input")
    return agents


def test_below_the_threshold_the_round_fails_and_the_model_is_unchanged() -> None:
    strategy = FedAvg(Sampling(min_fit_clients=2, min_available_clients=4))
    settings = LoopSettings(1, failed_rounds_allowed=1, secure_aggregation=SecAggSettings(threshold=3))
    loop = ServerLoop(InProcessTransport(two_die_before_masking()), strategy, settings)
    params = loop.run(initial(), strategy.initial_state(initial())).parameters
    for k, v in initial().items():
        np.testing.assert_array_equal(params[k], v)
    with pytest.raises(RoundFailed, match=r"fewer than the threshold t=3.*a at masked_input.*b at masked_input"):
        run(two_die_before_masking(), SecAggSettings(threshold=3))


def test_fedadam_works_unchanged_on_the_secure_mean() -> None:
    names = list(MODELS)
    sampling = Sampling(min_fit_clients=2, min_available_clients=4)
    plain = run({s: agent(s) for s in names}, None, FedOpt("fedadam", sampling, eta=0.1))
    secure = run({s: agent(s) for s in names}, SecAggSettings(), FedOpt("fedadam", sampling, eta=0.1))
    for k in plain:
        np.testing.assert_allclose(secure[k], plain[k], atol=1e-6)
        assert not np.allclose(plain[k], initial()[k])


def test_a_silo_sending_its_update_in_the_clear_is_refused() -> None:
    class Clear(DiesAt):
        def fit(self, ins: FitIns) -> FitRes | Failure:
            res = self.inner.fit(FitIns(ins.round, ins.parameters, replace(ins.instructions, secagg=None)))
            return res

    agents: dict[str, Any] = {s: agent(s) for s in MODELS}
    agents["c"] = Clear(agent("c"), "never")
    observer = Rows()
    strategy = FedAvg(Sampling(min_fit_clients=2, min_available_clients=4))
    loop = ServerLoop(InProcessTransport(agents), strategy, LoopSettings(1, secure_aggregation=SecAggSettings()),
                      observers=[observer])  # fmt: skip
    params = loop.run(initial(), strategy.initial_state(initial())).parameters
    rejected = [r for r in observer.rows if r.get("phase") == "fit" and r["silo"] == "c"]
    assert "in the clear" in rejected[0]["failure"]
    expected = fedavg_of(["a", "b", "d"])
    for k in expected:
        np.testing.assert_allclose(params[k], expected[k], atol=1e-6)


def test_a_reply_claiming_another_silos_number_drops_its_sender() -> None:
    from dataclasses import replace

    from fedsilo.privacy.secagg.messages import AdvertiseKeys
    from fedsilo.privacy.secagg.wire import from_bytes, to_bytes

    class Impostor(DiesAt):
        def exchange(self, step: str, payload: bytes) -> bytes | Failure:
            reply = self.inner.exchange(step, payload)
            if step != "advertise" or isinstance(reply, Failure):
                return reply
            return to_bytes(replace(from_bytes(reply, AdvertiseKeys), silo=1))  # d (number 4) answers as a

    agents: dict[str, Any] = {s: agent(s) for s in MODELS}
    agents["d"] = Impostor(agent("d"), "never")
    observer = Rows()
    strategy = FedAvg(Sampling(min_fit_clients=2, min_available_clients=4))
    loop = ServerLoop(InProcessTransport(agents), strategy, LoopSettings(1, secure_aggregation=SecAggSettings()),
                      observers=[observer])  # fmt: skip
    params = loop.run(initial(), strategy.initial_state(initial())).parameters
    d_row = next(r for r in observer.rows if r.get("phase") == "secagg" and r["silo"] == "d")
    assert "dropped at advertise" in d_row["failure"] and "silo number 1" in d_row["failure"]
    expected = fedavg_of(["a", "b", "c"])
    for k in expected:
        np.testing.assert_allclose(params[k], expected[k], atol=1e-6)


def still(name: str, n: int, size: int, shift: float = 0.0) -> SiloAgent:
    """A silo whose training moves every one of ``size`` values by ``shift`` (0: the update is all noise)."""

    def train(params: ArrayDict, data: Any, settings: TrainSettings, rng: np.random.Generator):
        return {"w": params["w"] + np.float32(shift)}, {}

    data = (np.zeros((n, 1)), np.zeros(n))
    zeros = {"w": np.zeros(size, np.float32)}
    return SiloAgent(name, lambda: NumpyClient(zeros, train, lambda p, d: (1.0, {}), lambda: data, lambda: data))


@pytest.mark.parametrize("dropped", [None, "d"])
def test_distributed_dp_the_unmasked_sum_carries_the_central_noise(dropped: str | None) -> None:
    """Each silo adds N(0, (zC)^2 / t), t = max(threshold, min_fit_clients) = 3.

    The sum over k survivors then has std zC sqrt(k / t): at least zC, the central DP-FedAvg amount.
    """
    size, z, c = 40_000, 0.5, 2.0
    agents: dict[str, Any] = {s: still(s, n, size) for s, n in zip("abcd", (10, 30, 20, 40), strict=True)}
    if dropped:
        agents[dropped] = DiesAt(agents[dropped], "masked_input")
    strategy = FedAvg(Sampling(min_fit_clients=2, min_available_clients=4))
    secagg = SecAggSettings(threshold=3, dp_noise_multiplier=z, dp_clip_norm=c)
    zeros = {"w": np.zeros(size, np.float32)}
    params = (
        ServerLoop(InProcessTransport(agents), strategy, LoopSettings(1, secure_aggregation=secagg))
        .run(zeros, strategy.initial_state(zeros))
        .parameters
    )
    survivors = 3 if dropped else 4
    noise_sum = params["w"].astype(np.float64) * survivors  # the mean over the survivors, times their count
    assert abs(noise_sum.mean()) < 0.05
    assert np.std(noise_sum) == pytest.approx(z * c * np.sqrt(survivors / 3), rel=0.03)


def test_distributed_dp_clips_each_update_to_clip_norm_with_uniform_weights() -> None:
    size, c = 4, 1.0  # every silo moves each of 4 values by 3: norm 6, clipped to 1 -> 0.5 per value
    agents = {s: still(s, n, size, shift=3.0) for s, n in zip("abc", (5, 50, 500), strict=True)}
    strategy = FedAvg(Sampling(min_fit_clients=2, min_available_clients=3))
    secagg = SecAggSettings(dp_noise_multiplier=0.0, dp_clip_norm=c)
    zeros = {"w": np.zeros(size, np.float32)}
    params = (
        ServerLoop(InProcessTransport(agents), strategy, LoopSettings(1, secure_aggregation=secagg))
        .run(zeros, strategy.initial_state(zeros))
        .parameters
    )
    np.testing.assert_allclose(params["w"], 0.5, atol=1e-6)
