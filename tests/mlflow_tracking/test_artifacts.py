"""mlflow_tracking/artifacts.py: the files logged with every trial run (history CSV, curves PNG,
confusion CSV/PNG), written atomically, and rebuilt from a training checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lungsrad.checkpoint_format import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION
from lungsrad.metrics import EPOCH, SELECTION_SCORE, TRAIN_LOSS
from lungsrad.training.checkpoint_files import save_atomic
from mlflow_tracking.artifacts import (
    CONFUSION_CSV,
    CONFUSION_PNG,
    CURVES_PNG,
    HISTORY_CSV,
    confusion_csv,
    history_csv,
    write_checkpoint_artifacts,
    write_run_artifacts,
)
from mlflow_tracking.tags import METRIC_TRAIN_SECONDS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY = [
    {TRAIN_LOSS: 1.5, EPOCH: 1, SELECTION_SCORE: 40.0},
    {EPOCH: 2, TRAIN_LOSS: math.nan, SELECTION_SCORE: 45.5, "val/extra": 1.0},
]


def test_history_csv_puts_the_epoch_first_and_marks_missing_values() -> None:
    lines = history_csv(HISTORY).splitlines()
    assert lines[0] == f"{EPOCH},{TRAIN_LOSS},{SELECTION_SCORE},val/extra"
    assert lines[1] == "1,1.5,40.0,"  # a metric an epoch lacks is empty
    assert lines[2] == "2,nan,45.5,1.0"


def test_confusion_csv_names_the_classes() -> None:
    text = confusion_csv(np.array([[3, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 4]]))
    header, first, *_ = text.splitlines()
    assert header.split(",")[0] == "true \\ predicted" and len(header.split(",")) == 5
    assert first.split(",")[1:] == ["3", "1", "0", "0"]


def test_run_artifacts_are_whole_files_without_temporaries(tmp_path: Path) -> None:
    confusion = np.eye(4, dtype=int)
    folder = write_run_artifacts(tmp_path / "a", history=HISTORY, confusion=confusion, title="t")
    names = sorted(path.name for path in folder.iterdir())
    assert names == sorted([HISTORY_CSV, CURVES_PNG, CONFUSION_CSV, CONFUSION_PNG])
    assert (folder / CURVES_PNG).read_bytes()[:8] == PNG_MAGIC
    assert (folder / CONFUSION_PNG).read_bytes()[:8] == PNG_MAGIC


def test_artifacts_rebuilt_from_a_training_checkpoint(tmp_path: Path) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "history": HISTORY,
        "best": {"epoch": 2, "confusion": np.eye(4, dtype=int).tolist()},
        "train_seconds": 12.5,
    }
    save_atomic(payload, tmp_path / "checkpoint.pt")
    folder, metrics, best_epoch = write_checkpoint_artifacts(
        tmp_path / "checkpoint.pt", tmp_path / "out", title="t"
    )
    assert (metrics, best_epoch) == ({METRIC_TRAIN_SECONDS: 12.5}, 2)
    assert (folder / HISTORY_CSV).read_text() == history_csv(HISTORY)
    assert (folder / CONFUSION_CSV).is_file() and (folder / CURVES_PNG).is_file()
