"""ICBHI metrics on hand-computed cases (Rocha et al., 2019 definitions, percent)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lungsrad.metrics import (
    ACCURACY,
    EVAL_KEYS,
    REPORT_SCORE,
    SCORE,
    SCORE_2CLASS,
    SELECTION_SCORE,
    SENSITIVITY,
    SENSITIVITY_2CLASS,
    SPECIFICITY,
    SPECIFICITY_2CLASS,
    confusion_degenerate_note,
    confusion_matrix,
    degenerate_note,
    icbhi_scores,
    metric_name,
    metric_range,
    metrics_degenerate_note,
    prediction_metrics,
    scores_from_confusion,
)

# 3 normal, 2 crackle, 1 wheeze, 2 both.
LABELS = [0, 0, 0, 1, 1, 2, 3, 3]
PREDICTIONS = [0, 1, 0, 1, 0, 2, 2, 3]


def test_confusion_matrix_rows_are_true_columns_predicted() -> None:
    expected = np.array(
        [
            [2, 1, 0, 0],  # normal: 2 right, 1 called crackle
            [1, 1, 0, 0],  # crackle: 1 called normal, 1 right
            [0, 0, 1, 0],  # wheeze: right
            [0, 0, 1, 1],  # both: 1 called wheeze, 1 right
        ]
    )
    matrix = confusion_matrix(LABELS, PREDICTIONS)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype == np.int64


def test_hand_computed_scores() -> None:
    scores = icbhi_scores(LABELS, PREDICTIONS)
    # Sp = normal predicted normal = 2/3; Se = abnormal with the exact class = (1+1+1)/5.
    assert scores[SPECIFICITY] == pytest.approx(200 / 3)
    assert scores[SENSITIVITY] == pytest.approx(60.0)
    assert scores[SCORE] == pytest.approx((200 / 3 + 60.0) / 2)  # 63.33
    # 2-class: abnormal predicted as any abnormal class = 4/5 (only one crackle called normal).
    assert scores[SPECIFICITY_2CLASS] == pytest.approx(200 / 3)
    assert scores[SENSITIVITY_2CLASS] == pytest.approx(80.0)
    assert scores[SCORE_2CLASS] == pytest.approx((200 / 3 + 80.0) / 2)  # 73.33
    assert scores[ACCURACY] == pytest.approx(62.5)  # 5 of 8
    assert set(scores) == set(EVAL_KEYS)


def test_perfect_and_all_normal_predictions() -> None:
    perfect = icbhi_scores(LABELS, LABELS)
    assert all(perfect[key] == pytest.approx(100.0) for key in EVAL_KEYS)
    all_normal = icbhi_scores(LABELS, [0] * len(LABELS))
    assert all_normal[SPECIFICITY] == 100.0 and all_normal[SENSITIVITY] == 0.0
    assert all_normal[SCORE] == 50.0 and all_normal[SCORE_2CLASS] == 50.0
    assert all_normal[ACCURACY] == pytest.approx(37.5)


def test_wrong_abnormal_class_counts_for_2class_only() -> None:
    scores = icbhi_scores([1, 2, 3], [3, 1, 2])
    assert scores[SENSITIVITY] == 0.0 and scores[SENSITIVITY_2CLASS] == 100.0
    assert math.isnan(scores[SPECIFICITY]) and math.isnan(scores[SCORE])  # no normal cycles


def test_no_abnormal_cycles_gives_nan_sensitivity() -> None:
    scores = icbhi_scores([0, 0], [0, 1])
    assert scores[SPECIFICITY] == 50.0
    assert math.isnan(scores[SENSITIVITY]) and math.isnan(scores[SCORE])


def test_scores_from_confusion_equals_icbhi_scores_and_accepts_tensors() -> None:
    direct = icbhi_scores(torch.tensor(LABELS), np.array(PREDICTIONS))
    from_matrix = scores_from_confusion(confusion_matrix(LABELS, PREDICTIONS))
    assert direct == pytest.approx(from_matrix)


def test_input_errors() -> None:
    with pytest.raises(ValueError, match=r"labels \(3\) and predictions \(2\) differ in length"):
        icbhi_scores([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="predictions must lie in 0..3"):
        icbhi_scores([0, 1], [0, 4])
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        confusion_matrix([-1], [0])


def test_metric_names() -> None:
    assert metric_name("test", SCORE) == "test/icbhi_score"
    assert metric_name("val", SENSITIVITY_2CLASS) == "val/sensitivity_2class"
    assert REPORT_SCORE == "report/icbhi_score"
    assert SELECTION_SCORE == "selection/icbhi_score"


@pytest.mark.parametrize(
    ("predicted_columns", "expected"),
    [  # per predicted class (normal, crackle, wheeze, both): cycles of each true class
        ({0: [60, 30, 20, 10]}, "degenerate: predicts only 'normal'"),
        ({3: [60, 30, 20, 10]}, "degenerate: predicts only 'both'"),
        ({0: [50, 20, 20, 0], 3: [10, 10, 0, 10]}, "degenerate: predicts only 'normal' and 'both'"),
        ({0: [60, 29, 20, 10], 1: [0, 1, 0, 0]}, "degenerate: predicts only 'normal' (99.2 % of"),
        ({0: [50, 10, 5, 5], 1: [5, 15, 5, 0], 2: [5, 5, 10, 5]}, None),
    ],
)
def test_degenerate_classifiers_are_named_by_the_classes_they_predict(
    predicted_columns: dict[int, list[int]], expected: str | None
) -> None:
    matrix = np.zeros((4, 4), dtype=np.int64)
    for column, counts in predicted_columns.items():
        matrix[:, column] = counts
    note = confusion_degenerate_note(matrix)
    if expected is None:
        assert note is None
    else:
        assert note is not None and note.startswith(expected)
    # The same rule from the logged metrics of the reported epoch.
    assert metrics_degenerate_note(prediction_metrics("report", matrix)) == note


def test_degenerate_note_needs_the_predicted_shares() -> None:
    assert metrics_degenerate_note({REPORT_SCORE: 50.0}) is None  # a run from older code
    assert confusion_degenerate_note(np.zeros((4, 4), dtype=np.int64)) is None  # no cycles
    assert degenerate_note({"normal": 100.0, "crackle": 0.0}) == (
        "degenerate: predicts only 'normal'"
    )


def test_metric_ranges() -> None:
    assert metric_range(REPORT_SCORE) == (0.0, 100.0)
    assert metric_range("best/selection/icbhi_score") == (0.0, 100.0)
    assert metric_range("test/recall/wheeze") == (0.0, 100.0)
    assert metric_range("train/loss") is None
