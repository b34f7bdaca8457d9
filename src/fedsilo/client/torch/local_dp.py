"""Local DP-SGD inside a silo with Opacus: per-sample clipping and noise, and the silo's own epsilon.

Where central DP protects each *silo* from the others and the server, local DP-SGD protects each
*record* inside a silo, even from someone who sees that silo's updates (Abadi et al. 2016, "Deep
Learning with Differential Privacy"). Opacus's ``PrivacyEngine`` does the work: every sample's
gradient is clipped to ``max_grad_norm``, Gaussian noise with std ``noise_multiplier *
max_grad_norm`` is added to their sum, and batches are drawn by Poisson sampling, which is what
the accounting assumes. The steps are recorded as events in fedsilo's own
:class:`~fedsilo.privacy.accounting.PrivacyAccountant`, which the silo keeps across rounds, so its
epsilon is that of all its training so far.

The wrapping is undone after each fit (hooks and per-sample gradients removed), so the same
model object keeps serving evaluation and the next round. Models with BatchNorm are refused
(batch statistics mix samples, so per-sample clipping would not bound one record's influence):
use GroupNorm or LayerNorm. FedProx's proximal term is refused too, because Opacus rebuilds the
gradient from per-sample gradients and would silently drop it. Noise comes from a seeded torch
generator (reproducible runs); Opacus's cryptographically secure mode is not used.

opacus is imported only here; the PyTorch client imports this module only when a run asks for local DP.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn

from fedsilo.client.torch.train import make_optimizer
from fedsilo.errors import ConfigError, TaskError
from fedsilo.privacy.accounting import PrivacyAccountant, PrivacyEvent
from fedsilo.wire.instructions import LocalDP, TrainSettings

# Opacus warns on every engine made without its secure RNG, and torch on every backward through
# Opacus's full backward hooks when the inputs need no gradient (always, for data). Both are
# expected here and would flood the output (and fail tests that treat warnings as errors).
_EXPECTED_WARNINGS = ("Secure RNG turned off", "Full backward hook is firing")


@dataclass(frozen=True, slots=True)
class LocalDPResult:
    """What one private fit gives: metrics (with ``epsilon``), and the accountant to keep."""

    metrics: dict[str, float]
    accountant: PrivacyAccountant
    epsilon: float


@contextmanager
def _expected_warnings_hidden() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def check_model(model: nn.Module) -> None:
    """Refuse layers Opacus cannot clip per sample, naming every one (TaskError)."""
    was_training = model.training
    model.train()  # the validator refuses eval mode, which the last evaluation may have left
    try:
        problems = ModuleValidator.validate(model, strict=False)
    finally:
        model.train(was_training)
    if problems:
        raise TaskError(
            "the model cannot be trained with local DP-SGD: " + "; ".join(str(p) for p in problems),
            "replace BatchNorm with GroupNorm or LayerNorm in the task's model()",
        )


def as_dataset(data: Any) -> torch.utils.data.Dataset:
    """``(x, y)`` arrays/tensors as a TensorDataset; any Dataset as it is."""
    if isinstance(data, tuple | list) and len(data) == 2:
        x, y = (
            t if isinstance(t, torch.Tensor) else torch.from_numpy(np.require(t, requirements=["C", "W"])) for t in data
        )
        x = x.float() if x.dtype == torch.float64 else x
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        return torch.utils.data.TensorDataset(x, y)
    return data


def train_epochs_private(
    model: nn.Module,
    data: Any,
    loss_fn: nn.Module,
    s: TrainSettings,
    dp: LocalDP,
    accountant: PrivacyAccountant | None = None,
) -> LocalDPResult:
    """``s.epochs`` epochs of DP-SGD on ``model`` in place; returns metrics and the updated accountant."""
    if s.proximal_mu > 0:
        raise ConfigError(
            "local DP-SGD cannot add FedProx's proximal term (Opacus rebuilds the gradient per sample)",
            "use another strategy than fedprox with privacy.local_dp, or remove privacy.local_dp",
        )
    model.train()  # Opacus refuses a model in eval mode, which the last evaluation leaves it in
    check_model(model)
    reduction = getattr(loss_fn, "reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise TaskError(
            f"local DP-SGD needs a loss with reduction 'mean' or 'sum', got '{reduction}'",
            "return e.g. nn.CrossEntropyLoss() from the task's loss()",
        )
    dataset = as_dataset(data)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("the silo has no training samples")
    device = next(model.parameters()).device
    torch.manual_seed(s.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=s.batch_size, shuffle=True, generator=torch.Generator().manual_seed(s.seed)
    )
    noise = torch.Generator(device=device).manual_seed(s.seed + 1)
    with _expected_warnings_hidden():
        engine = PrivacyEngine(accountant="rdp")
        private, optimizer, loader = engine.make_private(
            module=model,
            optimizer=make_optimizer(model, s),
            data_loader=loader,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            poisson_sampling=dp.poisson_sampling,
            loss_reduction=reduction,
            noise_generator=noise,
        )
        try:
            loss = _run(private, optimizer, loader, loss_fn, s, device)
        finally:
            private.to_standard_module()  # removes Opacus's hooks and per-sample gradients from `model`
    acc = accountant if accountant is not None else PrivacyAccountant()
    for noise_multiplier, sample_rate, steps in engine.accountant.history:
        acc = acc.record(PrivacyEvent(float(noise_multiplier), float(sample_rate), int(steps)))
    epsilon = acc.epsilon(dp.delta)
    return LocalDPResult({"train_loss": loss, "epsilon": epsilon, "dp_steps": float(acc.steps)}, acc, epsilon)


def _run(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    loss_fn: nn.Module,
    s: TrainSettings,
    device: torch.device,
) -> float:
    model.train()
    total, count = 0.0, 0
    for epoch in range(s.epochs):
        for group in optimizer.param_groups:
            group["lr"] = s.lr_at(epoch)
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()  # clips per sample, adds noise, steps, and tells the accountant
            if len(yb):  # Poisson sampling may draw an empty batch, whose mean loss is nan
                total += float(loss.detach()) * len(yb)
                count += len(yb)
    return total / max(count, 1)
