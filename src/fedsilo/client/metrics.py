"""Classification metrics as pure numpy functions, shared by every client."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean per-class recall over the classes present).

    Balanced accuracy matters for medical data, where one class often dominates.
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.size == 0:
        return {}
    correct = y_true == y_pred
    recalls = [float(correct[y_true == c].mean()) for c in np.unique(y_true)]
    return {"accuracy": float(correct.mean()), "balanced_accuracy": float(np.mean(recalls))}
