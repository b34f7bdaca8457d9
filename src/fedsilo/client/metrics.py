"""Classification metrics as pure numpy functions, shared by every client."""

from __future__ import annotations

import numpy as np


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean per-class recall over the classes present), and ROC AUC.

    Balanced accuracy matters for medical data, where one class often dominates. ``scores`` (the
    positive-class probability of a binary task, one per example) adds ``roc_auc``, which judges
    the ranking rather than one threshold; it is left out when only one class is present, since
    it is undefined there.
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.size == 0:
        return {}
    correct = y_true == y_pred
    recalls = [float(correct[y_true == c].mean()) for c in np.unique(y_true)]
    metrics = {"accuracy": float(correct.mean()), "balanced_accuracy": float(np.mean(recalls))}
    if scores is not None:
        auc = roc_auc(y_true, scores)
        if auc is not None:
            metrics["roc_auc"] = auc
    return metrics


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span."""
    values = np.asarray(values).reshape(-1)
    n = values.size
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], n]  # exclusive: a group holds sorted positions starts..ends-1
    group_rank = (starts + 1 + ends) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = group_rank[np.cumsum(starts_group) - 1]
    return ranks


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of binary labels (1 = positive) from scores, or None if undefined.

    Computed as the Mann-Whitney rank statistic: the probability that a random positive scores
    above a random negative, a tie counting one half (hence average ranks for tied scores). It is
    None when only one class is present or a score is not finite: no ranking to judge.
    """
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"roc_auc: {y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("roc_auc needs binary labels 0 and 1")
    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0 or not np.isfinite(s).all():
        return None
    ranks = average_ranks(s)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
