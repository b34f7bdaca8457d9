"""client/torch.py: parameters by state_dict name, seeded training, evaluation metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from fedsilo.client.torch import TorchClient, get_parameters, set_parameters  # noqa: E402
from fedsilo.silo.task import TaskModule  # noqa: E402
from fedsilo.wire.instructions import EvaluateInstructions, TrainSettings  # noqa: E402


def bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] - x[:, 1] > 0).astype(np.int64)


def client(model: nn.Module, n_train: int = 40) -> TorchClient:
    train, test = data(n_train, 1), data(20, 2)
    return TorchClient(model, lambda: train, lambda: test, device="cpu")


def distinct_values(like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out, start = {}, 1
    for name, ref in like.items():
        out[name] = (np.arange(start, start + ref.size).reshape(ref.shape) * 0.01).astype(ref.dtype)
        start += ref.size
    return out


def test_parameters_are_the_state_dict_by_name() -> None:
    model = bn_model()
    params = get_parameters(model)
    assert list(params) == list(model.state_dict())
    assert "1.running_mean" in params and "1.num_batches_tracked" in params  # buffers included
    assert params["1.num_batches_tracked"].dtype == np.int64
    assert params["0.weight"].shape == (3, 4) and params["0.weight"].dtype == np.float32


def test_set_then_get_round_trips_and_get_returns_copies() -> None:
    model = bn_model()
    new = distinct_values(get_parameters(model))
    set_parameters(model, new)
    got = get_parameters(model)
    for name, ref in new.items():
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape
        np.testing.assert_array_equal(got[name], ref)
    np.testing.assert_array_equal(model.state_dict()["3.bias"].numpy(), new["3.bias"])
    got["0.weight"][...] = 123.0  # the caller's copy, not the model's memory
    assert float(model.state_dict()["0.weight"].max()) < 1.0


def test_set_parameters_accepts_read_only_arrays() -> None:
    model = nn.Linear(2, 2)
    params = {k: v.copy() for k, v in get_parameters(model).items()}
    for v in params.values():
        v.setflags(write=False)
    set_parameters(model, params)
    np.testing.assert_array_equal(get_parameters(model)["weight"], params["weight"])


def test_fit_changes_parameters_and_is_deterministic_for_a_seed() -> None:
    config = TrainSettings(epochs=2, batch_size=8, lr=0.1, seed=17, momentum=0.9)
    start = get_parameters(bn_model(0))
    first, n, metrics = client(bn_model(5)).fit(start, config)
    again, _, _ = client(bn_model(6)).fit(start, config)  # other init: fit starts from `start`
    other, _, _ = client(bn_model(0)).fit(start, replace(config, seed=18))
    assert n == 40
    assert np.isfinite(metrics["train_loss"])
    assert not np.array_equal(first["0.weight"], start["0.weight"])
    assert int(first["1.num_batches_tracked"]) == 2 * 5  # 2 epochs of 5 batches
    for name in start:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["0.weight"], other["0.weight"])


def test_fit_accepts_a_torch_dataset_and_float64_inputs() -> None:
    x, y = data(16, 3)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    model = nn.Linear(4, 2)
    c = TorchClient(model, lambda: dataset, lambda: (x.astype(np.float64), y), device="cpu")
    params, n, _ = c.fit(get_parameters(model), TrainSettings(batch_size=4, seed=1))
    assert n == 16
    loss, n_test, metrics = c.evaluate(params, EvaluateInstructions())
    assert n_test == 16 and np.isfinite(loss) and set(metrics) == {"accuracy", "balanced_accuracy", "roc_auc"}


def test_evaluate_by_hand() -> None:
    # Identity weights: the logits are the inputs, so the predictions are argmax(x).
    x = np.array([[1, 0], [0, 1], [2, 1], [0, 3], [1, 2]], dtype=np.float32)
    y = np.array([0, 1, 1, 1, 0], dtype=np.int64)  # predicted 0, 1, 0, 1, 1
    model = nn.Linear(2, 2)
    c = TorchClient(model, lambda: (x, y), lambda: (x, y), device="cpu")
    params = {"weight": np.eye(2, dtype=np.float32), "bias": np.zeros(2, np.float32)}
    loss, n, metrics = c.evaluate(params, EvaluateInstructions())
    assert n == 5
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # P(class 1) = sigmoid(x1 - x0): positives score by 1, -1, 3 and negatives by -1, 1. Pairs:
    # 1 beats -1 and ties 1 (1.5); -1 ties -1 (0.5); 3 beats both (2) -> 4 of 6
    assert metrics["roc_auc"] == pytest.approx(4 / 6)
    z = x.astype(np.float64)
    expected_loss = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(5), y])
    assert loss == pytest.approx(expected_loss, rel=1e-5)


def test_one_logit_with_0_1_labels_is_a_binary_task_scored_by_its_sigmoid() -> None:
    x = np.array([[-2.0], [-1.0], [0.5], [1.0], [3.0]], dtype=np.float32)
    y = np.array([[0.0], [1.0], [0.0], [1.0], [1.0]], dtype=np.float32)
    c = TorchClient(nn.Linear(1, 1), lambda: (x, y), lambda: (x, y), loss=nn.BCEWithLogitsLoss(), device="cpu")
    _, _, metrics = c.evaluate({"weight": np.ones((1, 1), np.float32), "bias": np.zeros(1, np.float32)}, {})
    # logits = x: predicted 0, 0, 1, 1, 1; recalls 1/2 (class 0) and 2/3 (class 1).
    # positives -1, 1, 3 vs negatives -2, 0.5: -1 beats one, 1 and 3 beat both -> 5 of 6
    assert metrics == {
        "accuracy": pytest.approx(3 / 5),
        "balanced_accuracy": pytest.approx((1 / 2 + 2 / 3) / 2),
        "roc_auc": pytest.approx(5 / 6),
    }


def test_regression_outputs_have_no_classification_metrics() -> None:
    x = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    y = np.array([[0.5], [2.5], [1.0]], dtype=np.float32)
    c = TorchClient(nn.Linear(1, 1), lambda: (x, y), lambda: (x, y), loss=nn.MSELoss(), device="cpu")
    loss, n, metrics = c.evaluate({"weight": np.ones((1, 1), np.float32), "bias": np.zeros(1, np.float32)}, {})
    assert metrics == {} and n == 3
    assert loss == pytest.approx((0.25 + 0.25 + 4.0) / 3)
    zero_one = np.array([[0.0], [1.0], [1.0]], dtype=np.float32)  # regression targets that happen to be 0 or 1
    c = TorchClient(nn.Linear(1, 1), lambda: (x, zero_one), lambda: (x, zero_one), loss=nn.MSELoss(), device="cpu")
    assert c.evaluate({"weight": np.ones((1, 1), np.float32), "bias": np.zeros(1, np.float32)}, {})[2] == {}


def test_unknown_optimizer_is_an_error() -> None:
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw, got 'lbfgs'"):
        TrainSettings(optimizer="lbfgs")  # type: ignore[arg-type]


def test_a_torch_task_reads_the_default_npz_layout(tmp_path: Path, torch_task: Path, write_silo) -> None:
    folder = write_silo(tmp_path / "silo", n_train=12, n_test=5)
    task = TaskModule.load(torch_task)
    c = task.make_client([folder], seed=0, device="cpu")
    assert isinstance(c, TorchClient)
    start = task.initial_parameters(0)
    assert list(start) == ["weight", "bias"]
    params, n, _ = c.fit(start, TrainSettings(seed=1, lr=0.5, batch_size=4))
    assert n == 12 and not np.array_equal(params["weight"], start["weight"])
    loss, n_test, metrics = c.evaluate(params, EvaluateInstructions())
    assert n_test == 5 and "accuracy" in metrics
