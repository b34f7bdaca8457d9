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

torch and opacus are imported only here (and torch in ``client/torch.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch import nn

from fedsilo.arrays import ArrayDict
from fedsilo.client.base import TrainSettings
from fedsilo.client.torch import TorchClient, get_parameters, make_optimizer, set_parameters
from fedsilo.errors import ConfigError, TaskError
from fedsilo.messages import Config
from fedsilo.privacy.accounting import PrivacyAccountant, PrivacyEvent

# Opacus warns on every engine made without its secure RNG, and torch on every backward through
# Opacus's full backward hooks when the inputs need no gradient (always, for data). Both are
# expected here and would flood the output (and fail tests that treat warnings as errors).
_EXPECTED_WARNINGS = ("Secure RNG turned off", "Full backward hook is firing")


@dataclass(frozen=True, slots=True)
class LocalDP:
    """DP-SGD settings of one silo.

    ``poisson_sampling=False`` keeps fixed-size shuffled batches; the accountant then still assumes
    Poisson sampling at rate batch / records, an approximation (exact guarantees need True).
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float = 1e-5
    poisson_sampling: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not self.noise_multiplier >= 0:
            problems.append(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            problems.append(f"delta must be in (0, 1), got {self.delta}")
        if problems:
            raise ConfigError("invalid local DP settings: " + "; ".join(problems))


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
        raise ConfigError("local DP-SGD cannot add FedProx's proximal term", "set proximal_mu to 0 or drop local DP")
    model.train()  # Opacus refuses a model in eval mode, which the last evaluation leaves it in
    check_model(model)
    reduction = getattr(loss_fn, "reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise ConfigError(f"local DP-SGD needs a loss with reduction 'mean' or 'sum', got '{reduction}'")
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


class LocalDPClient(TorchClient):
    """The PyTorch client with DP-SGD in every fit; it keeps its accountant across rounds.

    ``fit`` reports the silo's own ``epsilon`` (at ``dp.delta``, over all rounds so far) in its
    metrics; ``accountant`` is plain state a checkpoint of the silo can save and restore.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: Callable[[], Any],
        test_data: Callable[[], Any],
        dp: LocalDP,
        loss: nn.Module | None = None,
        device: str = "auto",
        accountant: PrivacyAccountant | None = None,
    ) -> None:
        check_model(model)
        super().__init__(model, train_data, test_data, loss, device)
        self.dp = dp
        self.accountant = accountant if accountant is not None else PrivacyAccountant()
        self._train_set: Any = None

    @classmethod
    def over(cls, client: TorchClient, dp: LocalDP, accountant: PrivacyAccountant | None = None) -> LocalDPClient:
        """DP-SGD over an existing PyTorch client's model, data and loss (what a silo agent switches to)."""
        return cls(
            client.model,
            client._train_data_fn,
            client._test_data_fn,
            dp,
            client.loss_fn,
            str(client.device),
            accountant,
        )

    def fit(self, parameters: ArrayDict, config: Config) -> tuple[ArrayDict, int, dict[str, float]]:
        if self._train_set is None:
            self._train_set = as_dataset(self._train_data_fn())
        set_parameters(self.model, parameters)
        result = train_epochs_private(
            self.model, self._train_set, self.loss_fn, TrainSettings.from_config(config), self.dp, self.accountant
        )
        self.accountant = result.accountant
        return get_parameters(self.model), len(self._train_set), result.metrics
