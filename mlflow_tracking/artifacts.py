"""Files logged with a run: metric-history CSV and curves (PNG), confusion matrix (CSV + PNG).

Pure file writers (matplotlib Agg, no display); `RunTracker.log_artifacts` uploads the folder.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lungsrad.files import save_figure, write_text_atomic
from lungsrad.metrics import (
    CLASS_NAMES,
    EPOCH,
    SCORE,
    SELECTION_SCORE,
    SENSITIVITY,
    SPECIFICITY,
    SPLIT_TEST,
    SPLIT_VALIDATION,
    TRAIN_LOSS,
    metric_name,
)
from mlflow_tracking.tags import METRIC_TRAIN_SECONDS

HISTORY_CSV = "metrics_history.csv"
CURVES_PNG = "curves.png"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
# Test confusion at the selected epoch per recording device: confusion_by_device/<device>.csv/.png
DEVICE_CONFUSION_FOLDER = "confusion_by_device"


def history_csv(history: Sequence[Mapping[str, float]]) -> str:
    """Per-epoch metrics as CSV text: one row per epoch, one column per metric."""
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    if EPOCH in columns:
        columns.remove(EPOCH)
        columns.insert(0, EPOCH)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in history:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def confusion_csv(matrix: np.ndarray) -> str:
    """Confusion counts as CSV text (rows: true class, columns: predicted class)."""
    size = matrix.shape[0]
    names = list(CLASS_NAMES[:size]) if size <= len(CLASS_NAMES) else [str(i) for i in range(size)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *names])
    for name, row in zip(names, np.asarray(matrix), strict=True):
        writer.writerow([name, *(int(v) for v in row)])
    return buffer.getvalue()


def plot_curves(
    history: Sequence[Mapping[str, float]], path: str | os.PathLike[str], *, title: str
) -> None:
    """Training loss and Sp/Se/Score per epoch as a PNG (two panels)."""
    from matplotlib.figure import Figure

    epochs = [row.get(EPOCH, index + 1) for index, row in enumerate(history)]
    figure = Figure(figsize=(9.0, 3.6), dpi=110)
    loss_axes, score_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [row.get(TRAIN_LOSS, math.nan) for row in history], marker="o")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel(TRAIN_LOSS)
    for split in (SPLIT_TEST, SPLIT_VALIDATION):
        for key in (SCORE, SPECIFICITY, SENSITIVITY):
            name = metric_name(split, key)
            if any(name in row for row in history):
                style = "-" if split == SPLIT_TEST else "--"
                values = [row.get(name, math.nan) for row in history]
                score_axes.plot(epochs, values, style, marker=".", label=name)
    if any(SELECTION_SCORE in row for row in history):
        score_axes.set_title(f"selection: {SELECTION_SCORE}", fontsize=8)
    score_axes.set_xlabel("epoch")
    score_axes.set_ylabel("percent")
    if score_axes.get_legend_handles_labels()[1]:  # no test/val metrics: no legend
        score_axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


def write_run_artifacts(
    folder: str | os.PathLike[str],
    *,
    history: Sequence[Mapping[str, float]],
    confusion: np.ndarray | None,
    title: str,
) -> Path:
    """Writes the history CSV, curves PNG and confusion CSV/PNG into `folder`; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / HISTORY_CSV, history_csv(history))
    if history:
        plot_curves(history, folder / CURVES_PNG, title=title)
    if confusion is not None:
        from lungsrad.training.evaluate import plot_confusion

        write_text_atomic(folder / CONFUSION_CSV, confusion_csv(confusion))
        plot_confusion(np.asarray(confusion), folder / CONFUSION_PNG, title=title)
    return folder


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan"
    return value


def write_checkpoint_artifacts(
    checkpoint_file: str | os.PathLike[str], folder: str | os.PathLike[str], *, title: str
) -> tuple[Path, dict[str, float], int]:
    """Run artifacts from a lungsrad training checkpoint (a trial stopped before it finished).

    Returns (folder, {METRIC_TRAIN_SECONDS: seconds}, selected epoch).
    """
    from lungsrad.checkpoint_format import read_lungsrad_checkpoint

    payload = read_lungsrad_checkpoint(checkpoint_file)
    best = payload.get("best") or {}
    confusion = np.asarray(best["confusion"]) if "confusion" in best else None
    written = write_run_artifacts(
        folder, history=list(payload.get("history") or []), confusion=confusion, title=title
    )
    write_device_confusions(written, best.get("device_confusion") or {}, title=title)
    seconds = float(payload.get("train_seconds", math.nan))
    return written, {METRIC_TRAIN_SECONDS: seconds}, int(best.get("epoch", 0))


def write_device_confusions(
    folder: str | os.PathLike[str], matrices: Mapping[str, Sequence[Sequence[int]]], *, title: str
) -> None:
    """confusion_by_device/<device>.csv and .png in `folder`, one pair per device with cycles."""
    from lungsrad.training.evaluate import plot_confusion

    for device, matrix in matrices.items():
        base = Path(folder) / DEVICE_CONFUSION_FOLDER / device
        array = np.asarray(matrix, dtype=np.int64)
        write_text_atomic(base.with_suffix(".csv"), confusion_csv(array))
        plot_confusion(array, base.with_suffix(".png"), title=f"{title}, {device}")
