"""A PyTorch task for tests of bytes on the wire: 4 features -> 8192 hidden -> 2 classes (57k parameters).

Large enough that the safetensors header is a small part of an update, as in real models.
"""

from torch import nn


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8192), nn.ReLU(), nn.Linear(8192, 2))
