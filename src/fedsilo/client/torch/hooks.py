"""The torch glue of a task's server-side hooks (``server_evaluate`` and ``samples``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.client.base import silo_seed
from fedsilo.client.torch.data import DatasetData, TensorData, set_parameters, wrap_data
from fedsilo.client.torch.device import resolve_device
from fedsilo.client.torch.train import floats
from fedsilo.wire.arrays import ArrayDict

#: The server's evaluation of the global model on server-side data in a round: returns metrics.
ServerEvaluateHook = Callable[[nn.Module, Any, int], Mapping[str, float]]
#: Images from the global model: ``{row label: images (n, H, W) with values in [0, 1]}``.
SamplesHook = Callable[[nn.Module, np.random.Generator], Mapping[str, Any]]


class TorchServerHooks:
    """Runs a PyTorch task's server-side hooks on a global model: its own evaluation, and sample images.

    The server's evaluator (:class:`fedsilo.server.evaluation.CentralEvaluator`) calls it; this is
    the torch glue (loading parameters, seeding, tensors to numpy).

    ``server_evaluate`` may train something (train-on-synthetic, test-on-real trains a
    classifier), so it runs with gradients on, seeded per round. ``samples`` gets the same seeded
    generator every call, so successive grids show the same noise and differ only by the model.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Callable[[], Any],
        evaluate: ServerEvaluateHook | None,
        samples: SamplesHook | None,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self._data_fn = data
        self._data: TensorData | DatasetData | None = None
        self._evaluate, self._samples, self.seed = evaluate, samples, seed

    @property
    def has_samples(self) -> bool:
        return self._samples is not None

    def evaluate(self, round: int, parameters: ArrayDict) -> dict[str, float]:
        if self._evaluate is None:
            return {}
        if self._data is None:
            self._data = wrap_data(self._data_fn(), self.device)
        set_parameters(self.model, parameters)
        torch.manual_seed(silo_seed(self.seed, round, "server"))
        self.model.eval()
        return floats(self._evaluate(self.model, self._data.hook_view(), round), "server_evaluate")

    @torch.no_grad()
    def samples(self, parameters: ArrayDict) -> dict[str, np.ndarray]:
        """``{row label: float images (n, H, W)}`` from the task's ``samples`` hook."""
        if self._samples is None:
            return {}
        set_parameters(self.model, parameters)
        self.model.eval()
        rows = self._samples(self.model, np.random.default_rng(self.seed))
        out = {}
        for label, images in rows.items():
            array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
            out[str(label)] = array.reshape(-1, *array.shape[-2:]).astype(np.float32)
        return out
