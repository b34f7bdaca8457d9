"""Pneumonia from paediatric chest X-rays (PneumoniaMNIST, 28x28): the model and how a hospital reads its data.

This is all the user code a federated run needs: `model()` and `load_data(folder, split)`, plus an optional
`loss()`: here cross-entropy weighted against the class imbalance (three pneumonia images per normal one in
training), which keeps the model from over-calling pneumonia on the more balanced official test split.
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsilo import load_split

MEAN, STD = 0.57, 0.16  # pixel statistics of the PneumoniaMNIST training split, on [0, 1]
CLASS_COUNTS = (1214, 3494)  # normal, pneumonia in the published PneumoniaMNIST train split


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


def loss() -> nn.Module:
    """Cross-entropy with inverse-frequency class weights (fixed from the published counts)."""
    total = sum(CLASS_COUNTS)
    weights = torch.tensor([total / (len(CLASS_COUNTS) * c) for c in CLASS_COUNTS])
    return nn.CrossEntropyLoss(weight=weights)
