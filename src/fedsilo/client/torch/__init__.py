"""The PyTorch client: the one home of torch in fedsilo (with its local DP and server-hook glue).

``client`` trains and evaluates, ``data`` holds a silo's data on the device and converts
parameters, ``train`` is the supervised loop, ``device`` picks devices and seeds, ``local_dp`` is
DP-SGD with Opacus (imported only when a run asks for it), ``hooks`` runs a task's server-side
hooks. Importing this package imports torch; ``import fedsilo`` does not.
"""

from fedsilo.client.torch.client import EvaluateHook, FitHook, TorchClient
from fedsilo.client.torch.data import get_parameters, set_parameters, wrap_data
from fedsilo.client.torch.device import gpu_count, resolve_device, seed_torch, set_threads, worker_device
from fedsilo.client.torch.train import make_optimizer, output_metrics, train_epochs

__all__ = [
    "EvaluateHook",
    "FitHook",
    "TorchClient",
    "get_parameters",
    "gpu_count",
    "make_optimizer",
    "output_metrics",
    "resolve_device",
    "seed_torch",
    "set_parameters",
    "set_threads",
    "train_epochs",
    "worker_device",
    "wrap_data",
]
