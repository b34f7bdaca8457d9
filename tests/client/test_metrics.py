"""client/metrics.py against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.client.metrics import classification_metrics


def test_accuracy_and_balanced_accuracy_by_hand() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 0, 2])
    got = classification_metrics(y_true, y_pred)
    # 4 of 6 correct; recalls: class 0 2/3, class 1 1/2, class 2 1/1 -> (2/3 + 1/2 + 1) / 3 = 13/18
    assert got == {"accuracy": pytest.approx(4 / 6), "balanced_accuracy": pytest.approx(13 / 18)}


def test_imbalanced_data_where_the_two_differ() -> None:
    # Predicting the majority class everywhere: accuracy 0.9 but balanced accuracy 0.5.
    y_true = np.array([1] * 9 + [0])
    got = classification_metrics(y_true, np.ones(10, dtype=int))
    assert got["accuracy"] == pytest.approx(0.9)
    assert got["balanced_accuracy"] == pytest.approx(0.5)


def test_only_classes_present_in_y_true_count() -> None:
    got = classification_metrics(np.array([1, 1]), np.array([1, 0]))
    assert got == {"accuracy": 0.5, "balanced_accuracy": 0.5}


def test_column_vectors_are_flattened() -> None:
    got = classification_metrics(np.array([[0], [1], [1]]), np.array([0, 1, 0]))
    assert got["accuracy"] == pytest.approx(2 / 3)
    assert got["balanced_accuracy"] == pytest.approx((1 + 0.5) / 2)


def test_no_samples_gives_no_metrics() -> None:
    assert classification_metrics(np.array([]), np.array([])) == {}


def test_values_are_plain_floats() -> None:
    got = classification_metrics(np.array([0, 1]), np.array([0, 1]))
    assert got == {"accuracy": 1.0, "balanced_accuracy": 1.0}
    assert all(type(v) is float for v in got.values())
