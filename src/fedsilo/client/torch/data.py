"""A PyTorch model's parameters as named numpy arrays, and a silo's data held on the device.

Parameters are the model's ``state_dict`` (buffers included), named: an
``nn.ModuleDict({"generator": G, "discriminator": D})`` travels as ``generator.*`` and
``discriminator.*`` in one update. Data may be ``(x, y)`` arrays/tensors (the fast path: held on the
device as tensors and batched by index, no DataLoader) or any ``torch.utils.data.Dataset``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.wire.arrays import ArrayDict


def get_parameters(model: nn.Module) -> ArrayDict:
    """The model's state as named numpy arrays (copies, so later training cannot change them).

    On a GPU the copy to host memory is the one copy; on the CPU the arrays would share the
    model's memory, so they are copied once.
    """
    state = model.state_dict().items()
    return {k: v.detach().cpu().numpy() if v.is_cuda else v.detach().numpy().copy() for k, v in state}


def set_parameters(model: nn.Module, parameters: ArrayDict) -> None:
    """Copy named arrays into the model in place (the model object is kept between rounds)."""
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            src = np.require(parameters[name], requirements=["W"])
            tensor.copy_(torch.from_numpy(src))


class TensorData:
    """(x, y) as tensors on the device, batched by random index: far cheaper than a DataLoader."""

    def __init__(self, x: Any, y: Any, device: torch.device) -> None:
        self.x = as_tensor(x).to(device)
        self.y = as_tensor(y).to(device)
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def hook_view(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What a task's hooks receive: ``(x, y)`` as tensors already on the device."""
        return self.x, self.y

    def batches(
        self, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if generator is None:
            for i in range(0, n, batch_size):
                yield self.x[i : i + batch_size], self.y[i : i + batch_size]
            return
        order = torch.randperm(n, generator=generator).to(self.x.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield self.x[idx], self.y[idx]


class DatasetData:
    """Any map-style Dataset, through a DataLoader (seeded shuffling)."""

    def __init__(self, dataset: Any, device: torch.device) -> None:
        self.dataset = dataset
        self.device = device

    def __len__(self) -> int:
        return len(self.dataset)

    def hook_view(self) -> Any:
        """What a task's hooks receive: the Dataset itself (they batch it as they like)."""
        return self.dataset

    def batches(
        self, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator
        )
        for xb, yb in loader:
            yield xb.to(self.device), yb.to(self.device)


def as_tensor(a: Any) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.require(a, requirements=["C", "W"]))
    return t.float() if t.dtype == torch.float64 else t


def wrap_data(data: Any, device: torch.device) -> TensorData | DatasetData:
    if isinstance(data, tuple | list) and len(data) == 2:
        return TensorData(data[0], data[1], device)
    return DatasetData(data, device)
