"""Where a PyTorch silo trains and how it seeds: CPU or CUDA, threads, per-worker GPUs."""

from __future__ import annotations

import torch


def seed_torch(seed: int) -> None:
    """Seed torch's global generators (building a task's model draws its initial weights from them)."""
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
