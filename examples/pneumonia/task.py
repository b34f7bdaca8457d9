"""Pneumonia from paediatric chest X-rays (PneumoniaMNIST, 28x28): the model and how a hospital reads its data.

This is all the user code a federated run needs: `model()` and `load_data(folder, split)`.
"""

from pathlib import Path

import numpy as np
from torch import nn

from fedsilo import load_split

MEAN, STD = 0.57, 0.16  # pixel statistics of the PneumoniaMNIST training split, on [0, 1]


def model() -> nn.Module:
    """A small CNN (about 105k parameters) that trains in seconds per round on a CPU."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, 2),
    )


def load_data(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One silo's split as normalised float images (N, 1, 28, 28) and integer labels."""
    x, y = load_split(folder, split)
    x = (x.astype(np.float32) / 255.0 - MEAN) / STD
    return x[:, None, :, :], y.astype(np.int64)
