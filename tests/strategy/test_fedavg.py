"""strategy/fedavg.py: FedAvg against numbers worked out by hand (three silos, unequal sizes)."""

from __future__ import annotations

import numpy as np

from fedsilo.strategy.base import Sampling, StrategyState
from fedsilo.strategy.fedavg import FedAvg
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import StrategyExtras
from fedsilo.wire.messages import FitRes


def f32(values: object) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def aggregate(strategy: FedAvg, rnd: int, global_params: ArrayDict, state: StrategyState, results: list[FitRes]):
    agg = strategy.begin(rnd, global_params, state)
    for result in results:
        agg.add(result)
    assert agg.count == len(results)
    return agg.finish()


def test_two_rounds_of_fedavg_by_hand() -> None:
    strategy = FedAvg()
    g0 = {"w": f32([[0, 0], [0, 0]]), "b": f32([0])}
    state = strategy.initial_state(g0)
    assert state == StrategyState()
    assert strategy.fit_extras(1, state) == StrategyExtras()

    # Round 1: silos with 1, 3 and 6 examples.
    round1 = [
        FitRes("a", {"w": f32([[1, 2], [3, 4]]), "b": f32([10])}, 1),
        FitRes("b", {"w": f32([[2, 0], [1, 1]]), "b": f32([0])}, 3),
        FitRes("c", {"w": f32([[0, 1], [2, 3]]), "b": f32([5])}, 6),
    ]
    g1, state = aggregate(strategy, 1, g0, state, round1)
    # w = ([[1,2],[3,4]] + [[6,0],[3,3]] + [[0,6],[12,18]]) / 10 ; b = (10 + 0 + 30) / 10
    np.testing.assert_allclose(g1["w"], [[0.7, 0.8], [1.8, 2.5]], rtol=1e-6)
    np.testing.assert_allclose(g1["b"], [4.0], rtol=1e-6)
    assert g1["w"].dtype == np.float32 and list(g1) == ["w", "b"]

    # Round 2 starts from round 1's model: each silo returns g1 plus its own change, and the
    # silos now hold 4, 1 and 5 examples.
    round2 = [
        FitRes("a", {"w": g1["w"] * 2, "b": g1["b"] * 2}, 4),  # [[1.4,1.6],[3.6,5.0]], [8]
        FitRes("b", {"w": g1["w"] - 1, "b": g1["b"] - 1}, 1),  # [[-0.3,-0.2],[0.8,1.5]], [3]
        FitRes("c", {"w": g1["w"], "b": g1["b"]}, 5),  # [[0.7,0.8],[1.8,2.5]], [4]
    ]
    g2, state = aggregate(strategy, 2, g1, state, round2)
    # w = (4*[[1.4,1.6],[3.6,5.0]] + [[-0.3,-0.2],[0.8,1.5]] + 5*[[0.7,0.8],[1.8,2.5]]) / 10
    #   = [[8.8,10.2],[24.2,34.0]] / 10 ; b = (32 + 3 + 20) / 10
    np.testing.assert_allclose(g2["w"], [[0.88, 1.02], [2.42, 3.4]], rtol=1e-6)
    np.testing.assert_allclose(g2["b"], [5.5], rtol=1e-6)
    assert state == StrategyState()


def test_aggregation_order_does_not_change_the_result() -> None:
    strategy = FedAvg()
    g0 = {"w": f32([0, 0, 0])}
    results = [
        FitRes("a", {"w": f32([1, 2, 3])}, 2),
        FitRes("b", {"w": f32([-4, 0, 1])}, 7),
        FitRes("c", {"w": f32([0.5, 0.25, 8])}, 1),
    ]
    forward, _ = aggregate(strategy, 1, g0, StrategyState(), results)
    backward, _ = aggregate(strategy, 1, g0, StrategyState(), results[::-1])
    # (2*[1,2,3] + 7*[-4,0,1] + [0.5,0.25,8]) / 10 = [-25.5, 4.25, 21] / 10
    np.testing.assert_allclose(forward["w"], [-2.55, 0.425, 2.1], rtol=1e-6)
    np.testing.assert_array_equal(forward["w"], backward["w"])


def test_fedavg_neither_changes_its_inputs_nor_returns_them() -> None:
    strategy = FedAvg()
    g0 = {"w": f32([1, 1])}
    update = {"w": f32([3, 5])}
    g1, _ = aggregate(strategy, 1, g0, StrategyState(), [FitRes("a", update, 4)])
    np.testing.assert_array_equal(g0["w"], [1, 1])
    np.testing.assert_array_equal(update["w"], [3, 5])
    np.testing.assert_array_equal(g1["w"], [3, 5])
    assert not np.shares_memory(g1["w"], update["w"])


def test_state_passes_through_unchanged() -> None:
    state = StrategyState({"m": f32([1])}, {"step": 3})
    _, new_state = aggregate(FedAvg(), 1, {"w": f32([0])}, state, [FitRes("a", {"w": f32([1])}, 1)])
    assert new_state is state


def test_name_and_sampling() -> None:
    sampling = Sampling(fraction_fit=0.5, min_fit_clients=2)
    strategy = FedAvg(sampling)
    assert strategy.name == "fedavg"
    assert strategy.sampling is sampling
    assert FedAvg().sampling == Sampling()
