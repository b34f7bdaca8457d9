"""The PyTorch client: supervised local training of any ``nn.Module``, on CPU or CUDA.

Data may be ``(x, y)`` arrays/tensors (the fast path: held on the device as tensors and batched
by index, no DataLoader) or any ``torch.utils.data.Dataset``. The model object and the data stay
alive between rounds; each fit starts from the global parameters, with a fresh optimizer and a
seed derived from (experiment seed, round, silo), so a silo's result does not depend on which
worker ran it. Parameters are the model's ``state_dict`` (buffers included), named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.arrays import ArrayDict
from fedsilo.client.base import TrainSettings, nbytes_of
from fedsilo.client.metrics import classification_metrics
from fedsilo.messages import Config

EVAL_BATCH = 1024


def seed_torch(seed: int) -> None:
    torch.manual_seed(seed)


def seed_training(seed: int, device: torch.device) -> None:
    """Seed what a fit draws from (dropout, random init in user code) on the CPU and its device.

    What ``torch.manual_seed`` does for these, without its lazy seeding of every accelerator
    backend, which formats a stack trace per call when CUDA is not initialised (about 1 ms per
    silo: a tenth of a small silo's fit).
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def set_threads(count: int) -> None:
    """Intra-op threads of this process (workers share the cores, so each takes its part)."""
    torch.set_num_threads(max(1, count))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def worker_device(name: str, worker: int, gpus: int) -> str:
    """The device simulation worker ``worker`` trains on, with ``gpus`` CUDA devices visible.

    ``cuda`` (or ``auto`` with a GPU) spreads workers over the GPUs round-robin, so with one GPU
    every worker shares it and with four, workers 0..3 take one each; an explicit ``cuda:N`` or
    ``cpu`` is kept as given.
    """
    if name in ("auto", "cuda") and gpus > 1:
        return f"cuda:{worker % gpus}"
    if name == "auto":
        return "cuda" if gpus else "cpu"
    return name


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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


class _TensorData:
    """(x, y) as tensors on the device, batched by random index: far cheaper than a DataLoader."""

    def __init__(self, x: Any, y: Any, device: torch.device) -> None:
        self.x = _as_tensor(x).to(device)
        self.y = _as_tensor(y).to(device)
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

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


class _DatasetData:
    """Any map-style Dataset, through a DataLoader (seeded shuffling)."""

    def __init__(self, dataset: Any, device: torch.device) -> None:
        self.dataset = dataset
        self.device = device

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(
        self, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator
        )
        for xb, yb in loader:
            yield xb.to(self.device), yb.to(self.device)


def _as_tensor(a: Any) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.require(a, requirements=["C", "W"]))
    return t.float() if t.dtype == torch.float64 else t


def wrap_data(data: Any, device: torch.device) -> _TensorData | _DatasetData:
    if isinstance(data, tuple | list) and len(data) == 2:
        return _TensorData(data[0], data[1], device)
    return _DatasetData(data, device)


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    raise ValueError(f"unknown optimizer '{s.optimizer}' (use sgd, adam or adamw)")


def train_epochs(
    model: nn.Module, data: _TensorData | _DatasetData, loss_fn: nn.Module, s: TrainSettings
) -> dict[str, float]:
    """Plain supervised training; with ``proximal_mu`` > 0 adds FedProx's proximal term."""
    first = next(model.parameters(), None)
    seed_training(s.seed, first.device if first is not None else torch.device("cpu"))
    generator = torch.Generator().manual_seed(s.seed)
    optimizer = make_optimizer(model, s)
    anchor = [p.detach().clone() for p in model.parameters()] if s.proximal_mu > 0 else None
    model.train()
    total, count = 0.0, 0
    for epoch in range(s.epochs):
        for group in optimizer.param_groups:
            group["lr"] = s.lr_at(epoch)
        for xb, yb in data.batches(s.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            if anchor is not None:
                prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
                loss = loss + 0.5 * s.proximal_mu * prox
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(yb)
            count += len(yb)
    return {"train_loss": total / max(count, 1)}


@torch.no_grad()
def evaluate_model(
    model: nn.Module, data: _TensorData | _DatasetData, loss_fn: nn.Module
) -> tuple[float, dict[str, float]]:
    model.eval()
    total, outputs, labels = 0.0, [], []
    for xb, yb in data.batches(EVAL_BATCH, None):
        out = model(xb)
        total += float(loss_fn(out, yb)) * len(yb)
        outputs.append(out.cpu())
        labels.append(yb.cpu())
    n = sum(len(y) for y in labels)
    binary_logit = isinstance(loss_fn, nn.BCEWithLogitsLoss)
    metrics = output_metrics(torch.cat(outputs), torch.cat(labels), binary_logit) if labels else {}
    return total / max(n, 1), metrics


def output_metrics(logits: torch.Tensor, y: torch.Tensor, binary_logit: bool = False) -> dict[str, float]:
    """Classification metrics when the outputs are class logits, else none (e.g. regression).

    Two logits with integer labels, or one logit with 0/1 labels trained with ``BCEWithLogitsLoss``
    (``binary_logit``), is a binary task: the positive-class probability (softmax column 1, or the
    sigmoid) also gives ROC AUC. More logits: accuracy and balanced accuracy only. A one-output
    regression whose targets happen to be 0 or 1 is not mistaken for classification.
    """
    if not torch.is_floating_point(y) and logits.ndim == 2 and logits.shape[1] > 1:
        scores = torch.softmax(logits.double(), dim=1)[:, 1].numpy() if logits.shape[1] == 2 else None
        return classification_metrics(y.numpy(), logits.argmax(dim=1).numpy(), scores)
    single = logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1)
    if binary_logit and single and y.numel() == logits.numel() and bool(((y == 0) | (y == 1)).all()):
        z = logits.reshape(-1).double()
        labels = y.reshape(-1).long().numpy()
        return classification_metrics(labels, (z > 0).long().numpy(), torch.sigmoid(z).numpy())
    return {}


class TorchClient:
    def __init__(
        self,
        model: nn.Module,
        train_data: Callable[[], Any],
        test_data: Callable[[], Any],
        loss: nn.Module | None = None,
        device: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        # A worker passes the one model it keeps for all its silos: after the first silo it is
        # on the device already, and .to() moves nothing. set_parameters copies each round's
        # global model into the same device tensors, so nothing is reallocated per silo.
        self.model = model.to(self.device)
        self.loss_fn = loss if loss is not None else nn.CrossEntropyLoss()
        self._train_data_fn, self._test_data_fn = train_data, test_data
        self._train: _TensorData | _DatasetData | None = None
        self._test: _TensorData | _DatasetData | None = None

    def data_bytes(self) -> int:
        """Bytes of this silo's loaded tensors (a lazily read Dataset counts as 0)."""
        return nbytes_of(*((d.x, d.y) for d in (self._train, self._test) if isinstance(d, _TensorData)))

    def get_parameters(self) -> ArrayDict:
        return get_parameters(self.model)

    def fit(self, parameters: ArrayDict, config: Config) -> tuple[ArrayDict, int, dict[str, float]]:
        if self._train is None:
            self._train = wrap_data(self._train_data_fn(), self.device)
        set_parameters(self.model, parameters)
        metrics = train_epochs(self.model, self._train, self.loss_fn, TrainSettings.from_config(config))
        return get_parameters(self.model), len(self._train), metrics

    def evaluate(self, parameters: ArrayDict, config: Config) -> tuple[float, int, dict[str, float]]:
        if self._test is None:
            self._test = wrap_data(self._test_data_fn(), self.device)
        set_parameters(self.model, parameters)
        loss, metrics = evaluate_model(self.model, self._test, self.loss_fn)
        return loss, len(self._test), metrics
