"""Skin-lesion diagnosis from dermatoscopic images: a small CNN for a site's ``train.npz``/``test.npz``.

Serves both image sources the skin-lesion example knows (see README.md):

- the HAM10000 image release, split by site with ``fedsilo data split /path/to/HAM10000 --method
  column ...``, which writes each site's images resized to ``--image-size`` pixels (images.yaml);
- DermaMNIST (``dermamnist.npz``, 28x28), split into four silos of the sites' sizes with label skew
  (dermamnist.yaml): DermaMNIST keeps neither site nor lesion, so those silos are simulated.

Both give ``x`` as (N, S, S, 3) uint8 and ``y`` as 0-6 in the order akiec, bcc, bkl, df, mel, nv,
vasc. The network ends in a global average pool, so it takes any image size S >= 8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsilo import load_split

CLASS_COUNTS = (327, 514, 1099, 115, 1113, 6705, 142)  # published HAM10000 counts: akiec ... vasc
MEAN = np.array([0.76, 0.55, 0.57], dtype=np.float32)  # per-channel pixel means of HAM10000, on [0, 1]
STD = np.array([0.14, 0.15, 0.17], dtype=np.float32)


def model() -> nn.Module:
    """Three conv blocks and a linear head (24,039 parameters), small enough for a CPU."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, len(CLASS_COUNTS)),
    )


def load_data(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One site's split as normalised float images (N, 3, S, S) and integer labels."""
    x, y = load_split(folder, split)
    x = (x.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y.reshape(-1).astype(np.int64)


def loss() -> nn.Module:
    """Cross-entropy with inverse-frequency class weights (fixed from the published counts)."""
    total = sum(CLASS_COUNTS)
    weights = torch.tensor([total / (len(CLASS_COUNTS) * c) for c in CLASS_COUNTS], dtype=torch.float32)
    return nn.CrossEntropyLoss(weight=weights)
