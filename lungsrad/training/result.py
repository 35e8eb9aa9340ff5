"""What a finished run reports: `RunInfo` (facts known once a run is set up), `RunResult` (its
selected epoch, history and confusion) and their text (summary, confusion table, degenerate
warning), plus the JSON lines of metrics.jsonl.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lungsrad.config import VALIDATION_PROTOCOLS
from lungsrad.metrics import (
    ACCURACY,
    CLASS_NAMES,
    REPORT_PREFIX,
    SCORE,
    SCORE_2CLASS,
    SENSITIVITY,
    SENSITIVITY_2CLASS,
    SPECIFICITY,
    SPECIFICITY_2CLASS,
    SPLIT_TEST,
    TRAIN_CAPTURE_SECONDS,
    confusion_degenerate_note,
    device_metric_name,
    metric_name,
)


@dataclass(frozen=True)
class RunInfo:
    """Facts about a run, known once it is set up (logged by trackers)."""

    device: str  # "cpu" or "cuda:0"
    device_name: str  # GPU model or CPU description
    scan_backend: str  # selective-scan backend the model uses
    data_fingerprint: str  # FeatureSet.fingerprint
    seed: int  # train.seed
    num_parameters: int  # backbone parameters (projection head excluded)
    start_epoch: int  # first epoch this call trains (1 = fresh run)
    split_sizes: dict[str, int]  # cycles per split ("train", "test", and "val")
    amp_dtype: str  # "bf16", "fp16" or "off"
    capture_step: bool = False  # full training batches replayed as one CUDA graph


@dataclass
class RunResult:
    """What a finished run reports."""

    output_dir: Path
    best_epoch: int  # the epoch the protocol selected (1-based)
    report: dict[str, float]  # REPORT_* metrics: test metrics at best_epoch
    history: list[dict[str, float]]  # every epoch's metrics, in order
    confusion: np.ndarray  # (num_classes, num_classes) test confusion at best_epoch
    info: RunInfo
    train_seconds: float  # training + per-epoch evaluation, summed over resumed sessions
    protocol: str = "paper"  # train.protocol
    name: str = ""  # config name
    # Test confusion at best_epoch per recording device that has test cycles (absent: none).
    device_confusion: dict[str, np.ndarray] = field(default_factory=dict)
    # Whether best_epoch met train.min_sensitivity; None: no guard. False: no epoch did, and the
    # best epoch regardless of Se is reported (with a warning).
    min_sensitivity_met: bool | None = None

    @property
    def capture_seconds(self) -> float:
        """Seconds spent capturing the training step (CUDA graphs), summed over sessions."""
        return sum(row.get(TRAIN_CAPTURE_SECONDS, 0.0) for row in self.history)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (non-finite numbers become null)."""
        return _json_safe(
            {
                "name": self.name,
                "output_dir": str(self.output_dir),
                "protocol": self.protocol,
                "best_epoch": self.best_epoch,
                "report": self.report,
                "confusion": self.confusion.tolist(),
                "device_confusion": {
                    device: matrix.tolist() for device, matrix in self.device_confusion.items()
                },
                "train_seconds": self.train_seconds,
                "capture_seconds": self.capture_seconds,
                "info": asdict(self.info),
                "num_epochs": len(self.history),
                "min_sensitivity_met": self.min_sensitivity_met,
            }
        )

    def format_text(self) -> str:
        """A short human-readable summary with the confusion matrix."""
        selected = "validation" if self.protocol in VALIDATION_PROTOCOLS else "test"
        report = self.report
        lines = [
            f"run '{self.name}' finished: {len(self.history)} epochs in "
            f"{self.train_seconds:.1f} s on {self.info.device} ({self.info.device_name})",
            f"protocol '{self.protocol}': epoch {self.best_epoch} selected on the {selected} split"
            + (
                " (no epoch met train.min_sensitivity: best epoch regardless of Se)"
                if self.min_sensitivity_met is False
                else ""
            ),
            "test at that epoch: "
            + ", ".join(
                f"{label} {format_percent(report.get(metric_name(REPORT_PREFIX, key)))}"
                for label, key in (
                    ("ICBHI Score", SCORE),
                    ("Sp", SPECIFICITY),
                    ("Se", SENSITIVITY),
                    ("accuracy", ACCURACY),
                )
            ),
            *degenerate_lines(self.confusion),
            "2-class: "
            + ", ".join(
                f"{label} {format_percent(report.get(metric_name(REPORT_PREFIX, key)))}"
                for label, key in (
                    ("Score", SCORE_2CLASS),
                    ("Sp", SPECIFICITY_2CLASS),
                    ("Se", SENSITIVITY_2CLASS),
                )
            ),
            *self._device_lines(),
            "test confusion matrix (rows: true, columns: predicted):",
            format_confusion(self.confusion),
            f"outputs: {self.output_dir}",
        ]
        return "\n".join(lines)

    def _device_lines(self) -> list[str]:
        lines = []
        for device in self.device_confusion:
            values = {
                label: self.report.get(device_metric_name(REPORT_PREFIX, device, key))
                for label, key in (("Score", SCORE), ("Sp", SPECIFICITY), ("Se", SENSITIVITY))
            }
            cells = ", ".join(f"{label} {format_percent(v)}" for label, v in values.items())
            lines.append(f"  {device}: {cells}")
        return ["test per device:", *lines] if lines else []


def format_percent(value: float | None) -> str:
    """A percentage with two decimals, or "n/a" for a missing or non-finite one."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.2f}"


def degenerate_lines(matrix: np.ndarray, split: str = SPLIT_TEST) -> list[str]:
    """A warning line under a score whose confusion matrix is a degenerate classifier's
    (lungsrad.metrics.degenerate_note), else nothing."""
    note = confusion_degenerate_note(matrix)
    if note is None:
        return []
    return [f"warning: {note} on the {split} split; its score is not a result"]


def format_confusion(matrix: np.ndarray) -> str:
    """The confusion matrix as an aligned text table with class names."""
    size = matrix.shape[0]
    names = list(CLASS_NAMES[:size]) if size <= len(CLASS_NAMES) else [str(i) for i in range(size)]
    width = max(max(len(name) for name in names), len(str(int(matrix.max(initial=0)))), 4) + 2
    rows = ["".rjust(width) + "".join(name.rjust(width) for name in names)]
    for name, row in zip(names, matrix, strict=True):
        rows.append(name.rjust(width) + "".join(str(int(v)).rjust(width) for v in row))
    return "\n".join(rows)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def json_line(metrics: Mapping[str, float]) -> str:
    """One metrics.jsonl line (non-finite numbers become null)."""
    return json.dumps(_json_safe(metrics), allow_nan=False) + "\n"
