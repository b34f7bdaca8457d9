"""A two-model PyTorch task for tests, shaped like a GAN but with arithmetic one can follow by hand.

``model()`` is an ``nn.ModuleDict`` of a "generator" and a "discriminator"; ``fit`` moves the
generator's bias by ``lr * mean(x)`` and the discriminator's by ``-lr * epochs``, so after FedAvg
every round moves the generator's bias by ``lr`` times the mean of all silos' training inputs.
"""

import numpy as np
import torch
from torch import nn

from fedsilo import TrainSettings


def model() -> nn.Module:
    return nn.ModuleDict({"generator": nn.Linear(2, 4), "discriminator": nn.Linear(4, 1)})


def fit(model: nn.ModuleDict, data: tuple[torch.Tensor, torch.Tensor], settings: TrainSettings) -> dict[str, float]:
    x, _ = data
    assert model.training and isinstance(x, torch.Tensor)
    with torch.no_grad():
        model["generator"].bias += settings.lr * x.double().mean().float()
        model["discriminator"].bias -= settings.lr * settings.epochs
    return {"train_loss": float(x.double().mean()), "rows": len(x)}


def evaluate(model: nn.ModuleDict, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, dict[str, float]]:
    x, _ = data
    assert not model.training and not torch.is_grad_enabled()
    return float(model["discriminator"].bias[0]), {"mean_x": float(x.double().mean())}


def server_evaluate(model: nn.ModuleDict, data: tuple[torch.Tensor, torch.Tensor], round: int) -> dict[str, float]:
    x, _ = data
    return {"generator_bias": model["generator"].bias.double().sum().item(), "seen_round": round, "rows": len(x)}


def samples(model: nn.ModuleDict, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Three 2x2 images per row: the generator's output of fixed noise, squashed into [0, 1]."""
    z = torch.from_numpy(rng.standard_normal((3, 2)).astype(np.float32))
    out = torch.sigmoid(model["generator"](z)).view(3, 2, 2)
    return {"zero": out, "one": 1 - out}
