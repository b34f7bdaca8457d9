"""strategy/fedprox.py and the proximal term in the PyTorch client, by hand; then end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedsilo.client.torch import TorchClient
from fedsilo.experiment.config import load_config
from fedsilo.runtime.launch import run_experiment
from fedsilo.silo.task import TaskModule
from fedsilo.strategy.base import Sampling, StrategyState
from fedsilo.strategy.fedprox import FedProx
from fedsilo.wire.instructions import StrategyExtras, TrainSettings
from fedsilo.wire.messages import FitRes


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_fedprox_sends_mu_and_averages_like_fedavg_over_two_rounds() -> None:
    strategy = FedProx(mu=0.25, sampling=Sampling(min_fit_clients=2))
    g0 = {"w": f32(0, 0)}
    state = strategy.initial_state(g0)
    assert strategy.fit_extras(1, state) == StrategyExtras(proximal_mu=0.25)
    assert strategy.name == "fedprox" and strategy.sampling.min_fit_clients == 2

    agg = strategy.begin(1, g0, state)
    agg.add(FitRes("a", {"w": f32(1, 2)}, 1))
    agg.add(FitRes("b", {"w": f32(3, -2)}, 3))
    g1, state = agg.finish()
    # ([1,2] + 3*[3,-2]) / 4 = [10,-4] / 4
    np.testing.assert_allclose(g1["w"], [2.5, -1.0])

    agg = strategy.begin(2, g1, state)
    agg.add(FitRes("a", {"w": f32(2, 0)}, 5))
    agg.add(FitRes("b", {"w": f32(-1, 4)}, 3))
    g2, state = agg.finish()
    # (5*[2,0] + 3*[-1,4]) / 8 = [7, 12] / 8
    np.testing.assert_allclose(g2["w"], [0.875, 1.5])
    assert state == StrategyState()
    assert strategy.fit_extras(2, state) == StrategyExtras(proximal_mu=0.25)


def test_mu_must_be_positive() -> None:
    with pytest.raises(ValueError, match="FedProx needs mu > 0"):
        FedProx(mu=0.0)


def one_weight_client(start: float) -> TorchClient:
    """y = w * x with one weight, MSE loss, one sample (x=1, y=3): gradients are easy by hand."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(start)  # what the silo's model held before this round
    x, y = np.array([[1.0]], np.float32), np.array([[3.0]], np.float32)
    return TorchClient(model, lambda: (x, y), lambda: (x, y), loss=nn.MSELoss(), device="cpu")


@pytest.mark.parametrize(("mu", "expected"), [(0.0, 1.72), (0.5, 1.7), (4.0, 1.56)])
def test_the_torch_client_adds_the_proximal_term_around_the_received_model(mu: float, expected: float) -> None:
    # Received global w_g = 1 (the silo's own model held 5: the anchor must be the received one).
    # loss = (w - 3)^2 + mu/2 (w - w_g)^2 ; gradient 2(w - 3) + mu (w - w_g) ; lr 0.1, two steps:
    # step 1 at w = 1: 2(1-3) + mu*0 = -4           -> w = 1.4
    # step 2 at w = 1.4: 2(1.4-3) + mu*0.4 = -3.2 + 0.4 mu -> w = 1.4 + 0.32 - 0.04 mu
    #   mu = 0: 1.72 ; mu = 0.5: 1.70 ; mu = 4: 1.56
    client = one_weight_client(start=5.0)
    config = TrainSettings(lr=0.1, epochs=2, batch_size=1, optimizer="sgd", proximal_mu=mu, seed=0)
    params, n, _ = client.fit({"weight": np.array([[1.0]], np.float32)}, config)
    assert n == 1
    np.testing.assert_allclose(params["weight"], [[expected]], rtol=1e-6)


def test_fedprox_end_to_end_on_the_tiny_torch_task(make_experiment, torch_task) -> None:
    """mu reaches the silos: with a strong pull the global model stays nearer where it started."""
    initial = TaskModule.load(torch_task).initial_parameters(0)

    def distance_moved(strategy: dict) -> float:
        path = make_experiment(folder=strategy["name"], rounds=2, task=torch_task, extra={"strategy": strategy})
        config, text = load_config(path)
        result = run_experiment(config, text)
        assert result.summary["rounds"] == 2 and result.summary["failures"] == 0
        return float(sum(np.abs(result.parameters[k] - initial[k]).sum() for k in initial))

    fedavg, fedprox = distance_moved({"name": "fedavg"}), distance_moved({"name": "fedprox", "mu": 1.0})
    print(f"moved: fedavg {fedavg:.4f}, fedprox(mu=1) {fedprox:.4f}")
    assert fedprox < 0.8 * fedavg
