"""ICBHI 2017 challenge metrics (specificity, sensitivity, Score) and the metric-name constants.

Follows the official definition (Rocha et al., 2019): Sp = normal cycles predicted normal, Se =
abnormal cycles predicted with their exact class, Score = (Sp + Se) / 2, all in percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def class_recalls(matrix: np.ndarray) -> dict[str, float]:
    """Recall (percent) of each class from a confusion matrix, by class name; NaN for a class
    without cycles."""
    matrix = np.asarray(matrix)
    size = matrix.shape[0]
    names = CLASS_NAMES if size == len(CLASS_NAMES) else tuple(str(i) for i in range(size))
    return {names[c]: _percent(int(matrix[c, c]), int(matrix[c].sum())) for c in range(size)}


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
