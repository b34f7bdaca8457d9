"""The PyTorch client: supervised local training of any ``nn.Module``, on CPU or CUDA.

The model object and the data stay alive between rounds; each fit starts from the global
parameters, with a fresh optimizer and the seed the silo agent derived from (experiment seed,
round, silo), so a silo's result does not depend on which worker ran it.

A task that is not plain supervised learning (a GAN, several optimizers, a custom loss) passes its
own ``fit(model, data, settings) -> metrics`` and ``evaluate(model, data) -> (loss, metrics)``
hooks; the client still owns what must stay the same for every task: loading the global
parameters, seeding, holding the data on the device and returning named parameters. With local
DP-SGD (:meth:`TorchClient.fit_private`) the supervised loop runs through Opacus instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fedsilo.client.base import PrivateFit, nbytes_of
from fedsilo.client.torch.data import DatasetData, TensorData, get_parameters, set_parameters, wrap_data
from fedsilo.client.torch.device import resolve_device
from fedsilo.client.torch.train import evaluate_model, floats, train_epochs
from fedsilo.errors import ConfigError
from fedsilo.privacy.accounting import PrivacyAccountant
from fedsilo.wire.arrays import ArrayDict
from fedsilo.wire.instructions import EvaluateInstructions, LocalDP, TrainSettings

#: A task's own local training: trains ``model`` in place on ``data``, returns metrics.
FitHook = Callable[[nn.Module, Any, TrainSettings], Mapping[str, float]]
#: A task's own evaluation of ``model`` on ``data``: returns ``(loss, metrics)``.
EvaluateHook = Callable[[nn.Module, Any], tuple[float, Mapping[str, float]]]


class TorchClient:
    def __init__(
        self,
        model: nn.Module,
        train_data: Callable[[], Any],
        test_data: Callable[[], Any],
        loss: nn.Module | None = None,
        device: str = "auto",
        fit_hook: FitHook | None = None,
        evaluate_hook: EvaluateHook | None = None,
    ) -> None:
        self.device = resolve_device(device)
        # A worker passes the one model it keeps for all its silos: after the first silo it is
        # on the device already, and .to() moves nothing. set_parameters copies each round's
        # global model into the same device tensors, so nothing is reallocated per silo.
        self.model = model.to(self.device)
        self.loss_fn = loss if loss is not None else nn.CrossEntropyLoss()
        self._train_data_fn, self._test_data_fn = train_data, test_data
        self._train: TensorData | DatasetData | None = None
        self._test: TensorData | DatasetData | None = None
        self._private_train: Any = None  # the training data as a Dataset, for Opacus's sampler
        self.fit_hook, self.evaluate_hook = fit_hook, evaluate_hook

    def data_bytes(self) -> int:
        """Bytes of this silo's loaded tensors (a lazily read Dataset counts as 0)."""
        return nbytes_of(*((d.x, d.y) for d in (self._train, self._test) if isinstance(d, TensorData)))

    def get_parameters(self) -> ArrayDict:
        return get_parameters(self.model)

    def fit(self, parameters: ArrayDict, settings: TrainSettings) -> tuple[ArrayDict, int, dict[str, float]]:
        if self._train is None:
            self._train = wrap_data(self._train_data_fn(), self.device)
        set_parameters(self.model, parameters)
        if self.fit_hook is None:
            metrics = train_epochs(self.model, self._train, self.loss_fn, settings)
        else:  # the task's own step: seeded like the supervised loop, so results stay reproducible
            torch.manual_seed(settings.seed)
            self.model.train()
            metrics = floats(self.fit_hook(self.model, self._train.hook_view(), settings), "fit")
        return get_parameters(self.model), len(self._train), metrics

    def fit_private(
        self, parameters: ArrayDict, settings: TrainSettings, dp: LocalDP, accountant: PrivacyAccountant
    ) -> PrivateFit:
        """DP-SGD with Opacus (imported only now): the silo's own epsilon over all its rounds so far."""
        try:
            from fedsilo.client.torch.local_dp import as_dataset, check_model, train_epochs_private
        except ImportError as exc:
            raise ConfigError(f"privacy.local_dp needs opacus ({exc})", "pip install 'fedsilo[dp]'") from None

        if self._private_train is None:
            check_model(self.model)
            self._private_train = as_dataset(self._train_data_fn())
        set_parameters(self.model, parameters)
        result = train_epochs_private(self.model, self._private_train, self.loss_fn, settings, dp, accountant)
        return PrivateFit(get_parameters(self.model), len(self._private_train), result.metrics, result.accountant)

    def evaluate(
        self, parameters: ArrayDict, instructions: EvaluateInstructions
    ) -> tuple[float, int, dict[str, float]]:
        if self._test is None:
            self._test = wrap_data(self._test_data_fn(), self.device)
        set_parameters(self.model, parameters)
        if self.evaluate_hook is None:
            loss, metrics = evaluate_model(self.model, self._test, self.loss_fn)
            return loss, len(self._test), metrics
        torch.manual_seed(instructions.seed)
        self.model.eval()
        with torch.no_grad():
            loss, hook_metrics = self.evaluate_hook(self.model, self._test.hook_view())
        return float(loss), len(self._test), floats(hook_metrics, "evaluate")
