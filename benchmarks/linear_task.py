"""The linear model of benchmarks 2 and 3: multinomial logistic regression on MNIST's pixels.

A task module like any user's (``model``, ``load_data``); the plain PyTorch side and the Flower
peer load this same file, so all three train the same model on the same folders.
"""

from pathlib import Path

import numpy as np
from torch import nn

from fedsilo import load_split


def model() -> nn.Module:
    """784 x 10 weights and 10 biases (7,850 parameters)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))


def load_data(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_split(folder, split)
    return x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64)


def loss() -> nn.Module:
    return nn.CrossEntropyLoss()
