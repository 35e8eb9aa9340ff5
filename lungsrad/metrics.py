"""ICBHI 2017 challenge metrics (specificity, sensitivity, Score) and the metric-name constants.

Follows the official definition (Rocha et al., 2019): Sp = normal cycles predicted normal, Se =
abnormal cycles predicted with their exact class, Score = (Sp + Se) / 2, all in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("normal", "crackle", "wheeze", "both")
NORMAL_CLASS = 0

# Splits a metric can be computed on.
SPLIT_TRAIN = "train"
SPLIT_VALIDATION = "val"
SPLIT_TEST = "test"

# Per-split metric keys; the full name is f"{split}/{key}" (see metric_name).
SPECIFICITY = "specificity"
SENSITIVITY = "sensitivity"
SCORE = "icbhi_score"
SPECIFICITY_2CLASS = "specificity_2class"
SENSITIVITY_2CLASS = "sensitivity_2class"
SCORE_2CLASS = "icbhi_score_2class"
ACCURACY = "accuracy"
EVAL_KEYS: tuple[str, ...] = (
    SPECIFICITY,
    SENSITIVITY,
    SCORE,
    SPECIFICITY_2CLASS,
    SENSITIVITY_2CLASS,
    SCORE_2CLASS,
    ACCURACY,
)

# Training-loss metrics reported once per epoch.
TRAIN_LOSS = "train/loss"
TRAIN_CE_LOSS = "train/ce_loss"
TRAIN_TIME_LOSS = "train/time_mix_loss"
TRAIN_FREQ_LOSS = "train/freq_mix_loss"
TRAIN_LEARNING_RATE = "train/learning_rate"
TRAIN_SAMPLES_PER_SECOND = "train/samples_per_second"
# Seconds spent capturing the training step as a CUDA graph this epoch (train.capture_step only).
TRAIN_CAPTURE_SECONDS = "train/capture_seconds"
EPOCH = "epoch"

# The score the protocol selects epochs by (test for 'paper', val for 'validated'), this epoch.
SELECTION_SCORE = "selection/icbhi_score"
# The test metrics at the epoch selected so far under the run's protocol (what is reported).
REPORT_PREFIX = "report"
REPORT_SCORE = f"{REPORT_PREFIX}/{SCORE}"
REPORT_SPECIFICITY = f"{REPORT_PREFIX}/{SPECIFICITY}"
REPORT_SENSITIVITY = f"{REPORT_PREFIX}/{SENSITIVITY}"
REPORT_SCORE_2CLASS = f"{REPORT_PREFIX}/{SCORE_2CLASS}"
REPORT_SPECIFICITY_2CLASS = f"{REPORT_PREFIX}/{SPECIFICITY_2CLASS}"
REPORT_SENSITIVITY_2CLASS = f"{REPORT_PREFIX}/{SENSITIVITY_2CLASS}"
REPORT_EPOCH = f"{REPORT_PREFIX}/epoch"


def metric_name(split: str, key: str) -> str:
    """Full metric name, e.g. metric_name('test', SCORE) == 'test/icbhi_score'."""
    return f"{split}/{key}"


# Per recording device and per class, beside every split's overall metrics.
DEVICE_PREFIX = "device"
RECALL_PREFIX = "recall"
DEVICE_KEYS: tuple[str, ...] = (SPECIFICITY, SENSITIVITY, SCORE)


def device_metric_name(split: str, device: str, key: str) -> str:
    """e.g. device_metric_name('test', 'Meditron', SCORE) == 'test/device/Meditron/icbhi_score'."""
    return f"{split}/{DEVICE_PREFIX}/{device}/{key}"


def recall_metric_name(split: str, class_name: str) -> str:
    """e.g. recall_metric_name('test', 'crackle') == 'test/recall/crackle' (percent)."""
    return f"{split}/{RECALL_PREFIX}/{class_name}"


# Share of the cycles predicted as each class (percent), kept for the selected epoch only
# (report/predicted/<class>): what the degenerate-classifier flag reads.
PREDICTED_PREFIX = "predicted"
# A class counts as predicted when it gets at least this share of the predictions, so a stray
# cycle does not hide a one-class model.
PREDICTED_MIN_SHARE = 1.0


def predicted_metric_name(split: str, class_name: str) -> str:
    """e.g. predicted_metric_name('report', 'normal') == 'report/predicted/normal' (percent)."""
    return f"{split}/{PREDICTED_PREFIX}/{class_name}"


# Metrics that are percentages of cycles: intervals and plots of them keep to this range.
PERCENT_RANGE = (0.0, 100.0)
_PERCENT_KEYS = frozenset(EVAL_KEYS)
_PERCENT_GROUPS = frozenset({RECALL_PREFIX, PREDICTED_PREFIX})


def metric_range(name: str) -> tuple[float, float] | None:
    """The range a metric's values lie in: PERCENT_RANGE for the ICBHI rates and scores (any
    split or prefix, e.g. 'report/icbhi_score', 'best/selection/icbhi_score',
    'test/recall/wheeze'), None for an unbounded one (losses, seconds)."""
    parts = name.split("/")
    if parts[-1] in _PERCENT_KEYS or (len(parts) >= 2 and parts[-2] in _PERCENT_GROUPS):
        return PERCENT_RANGE
    return None


def _as_class_indices(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        # Probabilities or logits passed by mistake would otherwise be truncated silently.
        raise ValueError(f"{name} must be integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def confusion_matrix(
    labels: Sequence[int] | np.ndarray,
    predictions: Sequence[int] | np.ndarray,
    num_classes: int = 4,
) -> np.ndarray:
    """Counts (num_classes, num_classes): rows are true classes, columns predicted classes."""
    labels = _as_class_indices(labels, "labels")
    predictions = _as_class_indices(predictions, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels ({labels.shape[0]}) and predictions ({predictions.shape[0]}) differ in length"
        )
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def _percent(numerator: int, denominator: int) -> float:
    return 100.0 * numerator / denominator if denominator else math.nan


def scores_from_confusion(matrix: np.ndarray) -> dict[str, float]:
    """ICBHI 4-class and 2-class Sp/Se/Score and accuracy (percent) from a confusion matrix.

    A class group with no cycles gives NaN for its rate (and the Score), never a made-up 0 or 100.
    """
    matrix = np.asarray(matrix)
    total = int(matrix.sum())
    normal_total = int(matrix[NORMAL_CLASS].sum())
    normal_hit = int(matrix[NORMAL_CLASS, NORMAL_CLASS])
    abnormal_rows = [c for c in range(matrix.shape[0]) if c != NORMAL_CLASS]
    abnormal_total = int(sum(matrix[c].sum() for c in abnormal_rows))
    abnormal_exact = int(sum(matrix[c, c] for c in abnormal_rows))
    abnormal_any = abnormal_total - int(sum(matrix[c, NORMAL_CLASS] for c in abnormal_rows))
    specificity = _percent(normal_hit, normal_total)
    sensitivity = _percent(abnormal_exact, abnormal_total)
    sensitivity_2class = _percent(abnormal_any, abnormal_total)
    return {
        SPECIFICITY: specificity,
        SENSITIVITY: sensitivity,
        SCORE: (specificity + sensitivity) / 2.0,
        SPECIFICITY_2CLASS: specificity,
        SENSITIVITY_2CLASS: sensitivity_2class,
        SCORE_2CLASS: (specificity + sensitivity_2class) / 2.0,
        ACCURACY: _percent(int(np.trace(matrix)), total),
    }


def icbhi_scores(
    labels: Sequence[int] | np.ndarray,
    predictions: Sequence[int] | np.ndarray,
    num_classes: int = 4,
) -> dict[str, float]:
    """ICBHI metrics (percent) from 4-class labels and predictions.

    The 2-class variant (normal vs any abnormal) is derived from the same 4-class predictions.
    """
    return scores_from_confusion(confusion_matrix(labels, predictions, num_classes))


def _class_names(size: int) -> tuple[str, ...]:
    return CLASS_NAMES if size == len(CLASS_NAMES) else tuple(str(i) for i in range(size))


def class_recalls(matrix: np.ndarray) -> dict[str, float]:
    """Recall (percent) of each class from a confusion matrix, by class name; NaN for a class
    without cycles."""
    matrix = np.asarray(matrix)
    size = matrix.shape[0]
    names = _class_names(size)
    return {names[c]: _percent(int(matrix[c, c]), int(matrix[c].sum())) for c in range(size)}


def prediction_shares(matrix: np.ndarray) -> dict[str, float]:
    """Share (percent) of the cycles predicted as each class (the confusion matrix's column
    sums), by class name; NaN without cycles."""
    matrix = np.asarray(matrix)
    total = int(matrix.sum())
    names = _class_names(matrix.shape[1])
    return {names[c]: _percent(int(matrix[:, c].sum()), total) for c in range(matrix.shape[1])}


def prediction_metrics(split: str, matrix: np.ndarray) -> dict[str, float]:
    """`prediction_shares` as named metrics of `split` (predicted_metric_name)."""
    return {
        predicted_metric_name(split, name): share
        for name, share in prediction_shares(matrix).items()
    }


def degenerate_note(shares: Mapping[str, float]) -> str | None:
    """The one rule for a degenerate classifier, from the share of cycles predicted as each class
    (`prediction_shares`): it is degenerate when the classes it predicts (each at least
    PREDICTED_MIN_SHARE percent of the cycles) are at most half of the classes, e.g. 1 or 2 of
    ICBHI's 4. Returns e.g. "degenerate: predicts only 'normal'" or "degenerate: predicts only
    'normal' and 'both' (99.2 % of cycles)"; None when it is not degenerate or the shares are
    missing or NaN (an older run, no cycles)."""
    values = {name: float(share) for name, share in shares.items()}
    if len(values) < 2 or not all(math.isfinite(share) for share in values.values()):
        return None
    predicted = [name for name, share in values.items() if share >= PREDICTED_MIN_SHARE]
    if len(predicted) > len(values) // 2:
        return None
    note = "degenerate: predicts only " + " and ".join(f"'{name}'" for name in predicted)
    covered = sum(values[name] for name in predicted)
    if covered < 100.0 - 1e-9:  # stray predictions of the other classes
        note += f" ({covered:.1f} % of cycles)"
    return note


def confusion_degenerate_note(matrix: np.ndarray) -> str | None:
    """`degenerate_note` of a confusion matrix (rows true, columns predicted)."""
    return degenerate_note(prediction_shares(matrix))


def metrics_degenerate_note(metrics: Mapping[str, Any], split: str = REPORT_PREFIX) -> str | None:
    """`degenerate_note` of the `split/predicted/<class>` metrics in `metrics` (default: the
    reported epoch's, 'report/predicted/...'); None when they are absent."""
    prefix = f"{split}/{PREDICTED_PREFIX}/"
    shares = {
        key[len(prefix) :]: float(value)
        for key, value in metrics.items()
        if key.startswith(prefix) and isinstance(value, (int, float))
    }
    return degenerate_note(shares)


def confusion_by_group(
    labels: Sequence[int] | np.ndarray,
    predictions: Sequence[int] | np.ndarray,
    groups: Sequence[str],
    num_classes: int = 4,
) -> dict[str, np.ndarray]:
    """One confusion matrix per group (e.g. recording device), sorted by group name; a group
    with no cycles is absent, never an empty matrix."""
    labels = _as_class_indices(labels, "labels")
    predictions = _as_class_indices(predictions, "predictions")
    group_array = np.asarray(groups, dtype=object)
    if group_array.shape[0] != labels.shape[0]:
        raise ValueError(f"groups ({group_array.shape[0]}) and labels ({labels.shape[0]}) differ")
    return {
        str(group): confusion_matrix(
            labels[group_array == group], predictions[group_array == group], num_classes
        )
        for group in sorted(set(group_array.tolist()))
    }


def detailed_metrics(
    split: str, confusion: np.ndarray, device_confusions: dict[str, np.ndarray]
) -> dict[str, float]:
    """Per-class recall of `confusion` and Sp, Se, Score of each device's confusion, as named
    metrics of `split` (recall_metric_name, device_metric_name)."""
    metrics = {
        recall_metric_name(split, name): value for name, value in class_recalls(confusion).items()
    }
    for device, matrix in device_confusions.items():
        scores = scores_from_confusion(matrix)
        metrics.update({device_metric_name(split, device, key): scores[key] for key in DEVICE_KEYS})
    return metrics
