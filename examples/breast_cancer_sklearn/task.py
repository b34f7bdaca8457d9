"""Breast cancer diagnosis from cell-nucleus measurements (Wisconsin Diagnostic, as scikit-learn ships it).

The whole task for a federated scikit-learn model: the estimator, its shape (so the server can start
from an all-zero model without data), and how a hospital reads its rows.

Scaling must be identical at every hospital, or the averaged coefficients would mean something
different at each one. Each hospital's own statistics would differ, and pooled statistics would need
the data federating avoids. So the scaling is fixed in advance, in this file: each feature is mapped
from the range published with the data set (the Min/Max table of its description) onto [-1, 1].
"""

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from fedsilo import load_split

N_FEATURES = 30
CLASSES = [0, 1]  # 0 = malignant, 1 = benign

# Published per-feature (min, max): means, standard errors, then worst values of the ten measurements.
RANGES = np.array([
    (6.981, 28.11), (9.71, 39.28), (43.79, 188.5), (143.5, 2501.0), (0.053, 0.163),
    (0.019, 0.345), (0.0, 0.427), (0.0, 0.201), (0.106, 0.304), (0.05, 0.097),
    (0.112, 2.873), (0.36, 4.885), (0.757, 21.98), (6.802, 542.2), (0.002, 0.031),
    (0.002, 0.135), (0.0, 0.396), (0.0, 0.053), (0.008, 0.079), (0.001, 0.03),
    (7.93, 36.04), (12.02, 49.54), (50.41, 251.2), (185.2, 4254.0), (0.071, 0.223),
    (0.027, 1.058), (0.0, 1.252), (0.0, 0.291), (0.156, 0.664), (0.055, 0.208),
])  # fmt: skip


def model() -> LogisticRegression:
    """L2-regularised logistic regression; `train.epochs` is its lbfgs iterations per round."""
    return LogisticRegression(C=10.0)


def load_data(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_split(folder, split)
    low, high = RANGES[:, 0], RANGES[:, 1]
    return 2 * (x - low) / (high - low) - 1, y
