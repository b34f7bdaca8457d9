"""Plain supervised training and evaluation of a PyTorch model on a silo's data (FedProx's term included)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedsilo.client.metrics import classification_metrics
from fedsilo.client.torch.data import DatasetData, TensorData
from fedsilo.client.torch.device import seed_training
from fedsilo.errors import ParameterError, TaskError
from fedsilo.wire.instructions import TrainSettings

EVAL_BATCH = 1024


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    raise ParameterError(f"unknown optimizer '{s.optimizer}'", "use sgd, adam or adamw")


def train_epochs(
    model: nn.Module, data: TensorData | DatasetData, loss_fn: nn.Module, s: TrainSettings
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
    model: nn.Module, data: TensorData | DatasetData, loss_fn: nn.Module
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


def floats(metrics: Mapping[str, Any], hook: str) -> dict[str, float]:
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
