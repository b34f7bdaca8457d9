"""The PyTorch client: supervised local training of any ``nn.Module``, on CPU or CUDA.

Data may be ``(x, y)`` arrays/tensors (the fast path: held on the device as tensors and batched
by index, no DataLoader) or any ``torch.utils.data.Dataset``. The model object and the data stay
alive between rounds; each fit starts from the global parameters, with a fresh optimizer and a
seed derived from (experiment seed, round, silo), so a silo's result does not depend on which
worker ran it. Parameters are the model's ``state_dict`` (buffers included), named: an
``nn.ModuleDict({"generator": G, "discriminator": D})`` travels as ``generator.*`` and
``discriminator.*`` in one update.

A task that is not plain supervised learning (a GAN, several optimizers, a custom loss) passes its
own ``fit(model, data, settings) -> metrics`` and ``evaluate(model, data) -> (loss, metrics)``
hooks; the client still owns what must stay the same for every task: loading the global
parameters, seeding, holding the data on the device and returning named parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsilo.arrays import ArrayDict
from fedsilo.client.base import TrainSettings, nbytes_of, silo_seed
from fedsilo.client.metrics import classification_metrics
from fedsilo.errors import TaskError
from fedsilo.messages import Config

EVAL_BATCH = 1024

#: A task's own local training: trains ``model`` in place on ``data``, returns metrics.
FitHook = Callable[[nn.Module, Any, TrainSettings], Mapping[str, float]]
#: A task's own evaluation of ``model`` on ``data``: returns ``(loss, metrics)``.
EvaluateHook = Callable[[nn.Module, Any], tuple[float, Mapping[str, float]]]
#: The server's evaluation of the global model on server-side data in a round: returns metrics.
ServerEvaluateHook = Callable[[nn.Module, Any, int], Mapping[str, float]]
#: Images from the global model: ``{row label: images (n, H, W) with values in [0, 1]}``.
SamplesHook = Callable[[nn.Module, np.random.Generator], Mapping[str, Any]]


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


class _DatasetData:
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


def _floats(metrics: Mapping[str, Any], hook: str) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in metrics.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise TaskError(
            f"the task's {hook}() returned {type(metrics).__name__} with a value that is not a number ({exc})",
            f"return a dict of metric name -> number from {hook}()",
        ) from None


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
        self._train: _TensorData | _DatasetData | None = None
        self._test: _TensorData | _DatasetData | None = None
        self.fit_hook, self.evaluate_hook = fit_hook, evaluate_hook

    def data_bytes(self) -> int:
        """Bytes of this silo's loaded tensors (a lazily read Dataset counts as 0)."""
        return nbytes_of(*((d.x, d.y) for d in (self._train, self._test) if isinstance(d, _TensorData)))

    def get_parameters(self) -> ArrayDict:
        return get_parameters(self.model)

    def fit(self, parameters: ArrayDict, config: Config) -> tuple[ArrayDict, int, dict[str, float]]:
        if self._train is None:
            self._train = wrap_data(self._train_data_fn(), self.device)
        set_parameters(self.model, parameters)
        settings = TrainSettings.from_config(config)
        if self.fit_hook is None:
            metrics = train_epochs(self.model, self._train, self.loss_fn, settings)
        else:  # the task's own step: seeded like the supervised loop, so results stay reproducible
            torch.manual_seed(settings.seed)
            self.model.train()
            metrics = _floats(self.fit_hook(self.model, self._train.hook_view(), settings), "fit")
        return get_parameters(self.model), len(self._train), metrics

    def evaluate(self, parameters: ArrayDict, config: Config) -> tuple[float, int, dict[str, float]]:
        if self._test is None:
            self._test = wrap_data(self._test_data_fn(), self.device)
        set_parameters(self.model, parameters)
        if self.evaluate_hook is None:
            loss, metrics = evaluate_model(self.model, self._test, self.loss_fn)
            return loss, len(self._test), metrics
        torch.manual_seed(int(config.get("seed", 0)))
        self.model.eval()
        with torch.no_grad():
            loss, hook_metrics = self.evaluate_hook(self.model, self._test.hook_view())
        return float(loss), len(self._test), _floats(hook_metrics, "evaluate")


class ServerHooks:
    """Runs a task's server-side hooks on a global model: its own evaluation, and sample images.

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
        self._data: _TensorData | _DatasetData | None = None
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
        return _floats(self._evaluate(self.model, self._data.hook_view(), round), "server_evaluate")

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
