"""The device path of client/torch.py, on the CPU: one model per worker, kept in place across silos.

With ``device: cuda`` a worker's model must stay on the GPU between silos and never be
reallocated; the same code runs with ``device='cpu'`` here (no GPU on the test machines), so the
tests pin what it does with the tensors: same objects, same storage, every silo.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from fedsilo.client.torch import TorchClient, get_parameters, worker_device  # noqa: E402
from fedsilo.wire.instructions import TrainSettings  # noqa: E402


def silo_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(24, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def storage(model: nn.Module) -> dict[str, int]:
    return {k: v.data_ptr() for k, v in model.state_dict().items()}


def test_silos_of_one_worker_share_the_model_without_reallocating_it() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    before = storage(model)
    global_model = get_parameters(model)
    config = TrainSettings(epochs=1, batch_size=8, lr=0.1, seed=1, round=1)
    updates = []
    for silo in range(3):  # what a worker does: one client per silo, all over the same model
        data = silo_data(silo)
        client = TorchClient(model, lambda d=data: d, lambda d=data: d, device="cpu")
        assert client.model is model
        params, n, _ = client.fit(global_model, config)
        updates.append(params)
        assert n == 24
        assert storage(model) == before  # trained in place, in the tensors the model started with
    assert not np.allclose(updates[0]["0.weight"], updates[1]["0.weight"])  # each silo started from the global model
    again = TorchClient(model, lambda: silo_data(0), lambda: silo_data(0), device="cpu").fit(global_model, config)[0]
    for name, value in updates[0].items():
        np.testing.assert_array_equal(again[name], value)  # the shared model carries nothing over


def test_returned_parameters_do_not_alias_the_model() -> None:
    model = nn.Linear(2, 1)
    params = get_parameters(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not np.allclose(params["weight"], model.weight.detach().numpy())


@pytest.mark.parametrize(
    ("name", "worker", "gpus", "expected"),
    [
        ("cuda", 0, 1, "cuda"),  # one GPU: every worker shares it
        ("cuda", 3, 1, "cuda"),
        ("cuda", 5, 4, "cuda:1"),  # several: round-robin
        ("auto", 2, 2, "cuda:0"),
        ("auto", 1, 1, "cuda"),
        ("auto", 1, 0, "cpu"),
        ("cuda:1", 0, 4, "cuda:1"),  # an explicit device is kept
        ("cpu", 2, 4, "cpu"),
    ],
)
def test_workers_spread_over_the_gpus_there_are(name: str, worker: int, gpus: int, expected: str) -> None:
    assert worker_device(name, worker, gpus) == expected
