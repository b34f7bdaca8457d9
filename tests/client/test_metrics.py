"""client/metrics.py against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fedsilo.client.metrics import average_ranks, classification_metrics, roc_auc


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


def test_average_ranks_share_the_mean_rank_of_ties() -> None:
    # sorted: 1 (rank 1), 2 (rank 2), 3, 3 (ranks 3 and 4 -> 3.5 each)
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    assert average_ranks(np.array([])).size == 0


def test_roc_auc_by_hand_without_ties() -> None:
    # positives 0.35 and 0.8, negatives 0.1 and 0.4: of the 4 (pos, neg) pairs the positive wins 3
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(3 / 4)


def test_roc_auc_by_hand_with_ties_counting_one_half() -> None:
    # positives 0.2, 0.5, 0.9; negatives 0.2, 0.5. Pairs: 0.2 ties 0.2 (1/2), loses to 0.5 (0);
    # 0.5 beats 0.2 (1), ties 0.5 (1/2); 0.9 beats both (2) -> 4 of 6
    y = np.array([0, 1, 0, 1, 1])
    s = np.array([0.2, 0.2, 0.5, 0.5, 0.9])
    assert roc_auc(y, s) == pytest.approx(4 / 6)
    assert roc_auc(y, np.full(5, 0.3)) == pytest.approx(0.5)  # all tied: no ranking at all
    assert roc_auc(y, -s) == pytest.approx(1 - 4 / 6)  # reversed scores: the complement


def test_roc_auc_is_undefined_for_one_class_or_non_finite_scores() -> None:
    assert roc_auc(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])) is None
    assert roc_auc(np.array([0, 0]), np.array([0.1, 0.2])) is None
    assert roc_auc(np.array([0, 1]), np.array([0.1, np.nan])) is None


def test_roc_auc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        roc_auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="binary labels"):
        roc_auc(np.array([0, 2]), np.array([0.1, 0.2]))


def test_classification_metrics_adds_roc_auc_from_scores_and_omits_it_for_one_class() -> None:
    y_true = np.array([0, 0, 1, 1, 1])
    y_pred = np.array([0, 1, 1, 1, 0])
    scores = np.array([0.1, 0.6, 0.7, 0.9, 0.3])
    got = classification_metrics(y_true, y_pred, scores)
    # 3 of 5 correct; recalls 1/2 and 2/3; positives 0.7, 0.9, 0.3 vs negatives 0.1, 0.6:
    # 0.7 wins 2, 0.9 wins 2, 0.3 wins 1 -> 5 of 6
    assert got == {
        "accuracy": pytest.approx(3 / 5),
        "balanced_accuracy": pytest.approx((1 / 2 + 2 / 3) / 2),
        "roc_auc": pytest.approx(5 / 6),
    }
    assert type(got["roc_auc"]) is float
    one_class = classification_metrics(np.array([1, 1]), np.array([1, 0]), np.array([0.9, 0.2]))
    assert one_class == {"accuracy": 0.5, "balanced_accuracy": 0.5}
