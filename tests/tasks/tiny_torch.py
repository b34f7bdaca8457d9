"""A tiny PyTorch task for tests: one Linear layer, 4 features -> 2 classes.

It defines only ``model()``, so silos' data is read with fedsilo's default loader
(``<folder>/<split>.npz`` with arrays ``x`` and ``y``).
"""

from torch import nn


def model() -> nn.Module:
    return nn.Linear(4, 2)
