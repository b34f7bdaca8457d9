"""client/torch/local_dp.py: Opacus DP-SGD clips every sample's gradient, adds noise, and the silo's epsilon grows."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")
from torch import nn  # noqa: E402

from fedsilo.client.torch import TorchClient, get_parameters, set_parameters  # noqa: E402
from fedsilo.client.torch.local_dp import train_epochs_private  # noqa: E402
from fedsilo.errors import ConfigError, ParameterError, TaskError  # noqa: E402
from fedsilo.privacy.accounting import PrivacyAccountant, PrivacyEvent  # noqa: E402
from fedsilo.wire.instructions import EvaluateInstructions, LocalDP, TrainSettings  # noqa: E402


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32) * np.array([1.0, 3.0, 0.5], np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def one_full_batch(n: int) -> TrainSettings:
    """One step of plain SGD (lr 1) on the whole data, so the parameter change is minus the gradient used."""
    return TrainSettings(epochs=1, batch_size=n, optimizer="sgd", lr=1.0, momentum=0.0, seed=0)


def per_sample_gradients(model: nn.Module, x: np.ndarray, y: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Each sample's gradient by plain autograd, one sample at a time (no Opacus)."""
    out = []
    for i in range(len(y)):
        model.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x[i : i + 1])), torch.from_numpy(y[i : i + 1])).backward()
        out.append({k: p.grad.detach().numpy().astype(np.float64).copy() for k, p in model.named_parameters()})
    return out


def clipped_mean(grads: list[dict[str, np.ndarray]], max_norm: float) -> dict[str, np.ndarray]:
    total = {k: np.zeros_like(v) for k, v in grads[0].items()}
    for g in grads:
        norm = math.sqrt(sum(float((v**2).sum()) for v in g.values()))
        scale = min(1.0, max_norm / (norm + 1e-6))  # Opacus's clip factor
        for k in total:
            total[k] += g[k] * scale
    return {k: v / len(grads) for k, v in total.items()}


@pytest.mark.parametrize("max_norm", [0.05, 100.0])
def test_step_is_the_mean_of_per_sample_clipped_gradients(max_norm: float) -> None:
    check_step(max_norm, nn.CrossEntropyLoss(), 1.0)


def test_a_summed_loss_steps_by_the_sum_of_clipped_gradients() -> None:
    check_step(0.05, nn.CrossEntropyLoss(reduction="sum"), 6.0)
    with pytest.raises(TaskError, match="reduction 'mean' or 'sum', got 'none'"):
        check_step(0.05, nn.CrossEntropyLoss(reduction="none"), 6.0)


def check_step(max_norm: float, loss: nn.Module, scale: float) -> None:
    x, y = data(6, 1)
    model = linear()
    start = get_parameters(model)
    grads = per_sample_gradients(linear(), x, y)
    norms = [math.sqrt(sum(float((v**2).sum()) for v in g.values())) for g in grads]
    assert len({round(n, 3) for n in norms}) == 6  # distinct norms: a wrong clip or weighting would show
    if max_norm < 1:
        assert min(norms) > max_norm  # every sample is clipped
    else:
        assert max(norms) < max_norm  # none is: the step equals plain SGD's mean gradient

    dp = LocalDP(noise_multiplier=0.0, max_grad_norm=max_norm, poisson_sampling=False)
    result = train_epochs_private(model, (x, y), loss, one_full_batch(6), dp)
    expected = clipped_mean(grads, max_norm)
    after = get_parameters(model)
    for name in ("weight", "bias"):
        assert np.allclose(start[name] - after[name], scale * expected[name], atol=1e-6)
    assert result.epsilon == math.inf  # no noise, no privacy


def test_noise_is_added_with_std_noise_multiplier_times_clip_over_batch() -> None:
    x, y = data(8, 2)
    torch.manual_seed(0)
    model = nn.Linear(3, 250)  # 1000 parameters, so the noise's std can be measured
    start = get_parameters(model)
    dp = LocalDP(noise_multiplier=2000.0, max_grad_norm=1e-6, poisson_sampling=False)  # gradients ~0: noise moves
    train_epochs_private(model, (x, y), nn.CrossEntropyLoss(), one_full_batch(8), dp)
    moved = np.concatenate([(start[k] - v).ravel() for k, v in get_parameters(model).items()])
    # Noise std on the summed gradient is z * C = 2e-3; divided by the batch of 8: 2.5e-4 per parameter.
    assert abs(moved.std() - 2.5e-4) < 0.1 * 2.5e-4
    assert abs(moved.mean()) < 4 * 2.5e-4 / math.sqrt(1000)


def test_epsilon_grows_with_steps_and_the_accountant_carries_over() -> None:
    x, y = data(40, 3)
    dp = LocalDP(noise_multiplier=1.0, max_grad_norm=1.0)
    settings = TrainSettings(epochs=1, batch_size=10, lr=0.1, seed=4)
    model = linear()
    first = train_epochs_private(model, (x, y), nn.CrossEntropyLoss(), settings, dp)
    second = train_epochs_private(model, (x, y), nn.CrossEntropyLoss(), settings, dp, first.accountant)
    # Poisson sampling at rate 1 / (batches per epoch) = 1/4, 4 steps per epoch.
    assert first.accountant.events == (PrivacyEvent(1.0, 0.25, 4),)
    assert second.accountant.events == (PrivacyEvent(1.0, 0.25, 8),)
    assert 0 < first.epsilon < second.epsilon
    assert second.epsilon == PrivacyAccountant().record(PrivacyEvent(1.0, 0.25, 8)).epsilon(1e-5)
    assert second.metrics["epsilon"] == second.epsilon and second.metrics["dp_steps"] == 8.0
    assert math.isfinite(second.metrics["train_loss"])


def test_training_is_reproducible_and_leaves_the_model_clean() -> None:
    x, y = data(30, 5)
    dp = LocalDP(noise_multiplier=0.8, max_grad_norm=0.5)
    settings = TrainSettings(epochs=2, batch_size=8, lr=0.2, seed=9)
    runs = []
    for _ in range(2):
        model = linear()
        train_epochs_private(model, (x, y), nn.CrossEntropyLoss(), settings, dp)
        runs.append(get_parameters(model))
        assert list(runs[-1]) == ["weight", "bias"]  # no Opacus wrapper names
        assert not model._forward_hooks and not model._backward_hooks and not model._forward_pre_hooks
        assert all(not hasattr(p, "grad_sample") for p in model.parameters())
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_the_torch_client_trains_privately_and_the_accountant_carries_over() -> None:
    train, test = data(32, 6), data(10, 7)
    client = TorchClient(linear(), lambda: train, lambda: test, device="cpu")
    params = client.get_parameters()
    settings, dp = TrainSettings(epochs=1, batch_size=8, lr=0.1, seed=1), LocalDP(1.1, 1.0)
    first = client.fit_private(params, settings, dp, PrivacyAccountant())
    second = client.fit_private(first.parameters, settings, dp, first.accountant)
    assert first.num_examples == 32
    assert 0 < first.metrics["epsilon"] < second.metrics["epsilon"]
    assert second.accountant.steps == 8
    new_params = first.parameters
    loss, n, _ = client.evaluate(new_params, EvaluateInstructions())
    assert n == 10 and math.isfinite(loss)
    set_parameters(client.model, params)  # the plain model still takes parameters by name


def test_batchnorm_and_fedprox_are_refused_with_a_fix() -> None:
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(TaskError, match="BatchNorm") as e:
        train_epochs_private(bn, data(8, 0), nn.CrossEntropyLoss(), TrainSettings(), LocalDP(1.0, 1.0))
    assert e.value.fix and "GroupNorm" in e.value.fix
    with pytest.raises(ConfigError, match="proximal term"):
        train_epochs_private(
            linear(), data(8, 0), nn.CrossEntropyLoss(), TrainSettings(proximal_mu=0.1), LocalDP(1.0, 1.0)
        )
    with pytest.raises(ParameterError) as e2:
        LocalDP(noise_multiplier=-1.0, max_grad_norm=0.0, delta=2.0)
    assert all(w in e2.value.message for w in ("noise_multiplier", "max_grad_norm", "delta"))
