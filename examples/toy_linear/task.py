"""The smallest federated run: a 2-input linear model learning y = 2*x1 - 3*x2 + 1 from four points."""

import numpy as np
from torch import nn


def model() -> nn.Module:
    return nn.Linear(2, 1)


def load_data(path, split):
    """A silo's points from its CSV (x1, x2, y); with two points each, it tests on what it trains on."""
    rows = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float32)
    return rows[:, :2], rows[:, 2:]


def loss() -> nn.Module:
    return nn.MSELoss()
