"""`evaluate_checkpoint`: ICBHI metrics and the confusion matrix of a lungsrad checkpoint on one
split, printed and (with an output folder) written as JSON and a PNG heat map.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lungsrad.config import VALIDATION_PROTOCOLS, ExperimentConfig
from lungsrad.data.features import FeatureSet, build_feature_set
from lungsrad.data.layout import device_of
from lungsrad.data.loaders import split_indices
from lungsrad.files import save_figure, write_text_atomic
from lungsrad.metrics import (
    ACCURACY,
    CLASS_NAMES,
    SCORE,
    SCORE_2CLASS,
    SENSITIVITY,
    SENSITIVITY_2CLASS,
    SPECIFICITY,
    SPECIFICITY_2CLASS,
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
    detailed_metrics,
    device_metric_name,
    metric_name,
)
from lungsrad.training.result import degenerate_lines, format_confusion
from lungsrad.training.runtime import cpu_threads, evaluate_split_by_device, resolve_amp_dtype
from lungsrad.training.trained_model import load_trained_model

SPLITS = (SPLIT_TEST, SPLIT_VALIDATION, SPLIT_TRAIN)


@dataclass
class EvalReport:
    """Metrics of one checkpoint on one split."""

    checkpoint: Path
    split: str  # "test", "val" or "train"
    epoch: int  # the checkpoint's epoch
    num_cycles: int  # cycles evaluated
    metrics: dict[str, float]  # metric_name(split, key) for key in lungsrad.metrics.EVAL_KEYS
    confusion: np.ndarray  # (num_classes, num_classes): rows true, columns predicted
    device: str
    plot_path: Path | None = None  # confusion PNG, when an output folder was given
    # Per recording device with cycles in the split (absent: none), rows true, columns predicted.
    device_confusion: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (non-finite numbers become null)."""
        return {
            "checkpoint": str(self.checkpoint),
            "split": self.split,
            "epoch": self.epoch,
            "num_cycles": self.num_cycles,
            "metrics": {
                key: (value if np.isfinite(value) else None) for key, value in self.metrics.items()
            },
            "confusion": self.confusion.tolist(),
            "device_confusion": {
                name: matrix.tolist() for name, matrix in self.device_confusion.items()
            },
            "device": self.device,
        }

    def format_text(self) -> str:
        """Metrics and the confusion matrix as text."""

        def shown(name: str) -> str:
            number = self.metrics.get(name, float("nan"))
            return f"{number:.2f}" if np.isfinite(number) else "n/a"

        def value(key: str) -> str:
            return shown(metric_name(self.split, key))

        def value_of(device: str, key: str) -> str:
            return shown(device_metric_name(self.split, device, key))

        lines = [
            f"{self.checkpoint} (epoch {self.epoch}) on the {self.split} split: "
            f"{self.num_cycles} cycles, {self.device}",
            f"ICBHI Score {value(SCORE)}, Sp {value(SPECIFICITY)}, Se {value(SENSITIVITY)}, "
            f"accuracy {value(ACCURACY)}",
            *degenerate_lines(self.confusion, self.split),
            f"2-class: Score {value(SCORE_2CLASS)}, Sp {value(SPECIFICITY_2CLASS)}, "
            f"Se {value(SENSITIVITY_2CLASS)}",
            *(
                f"  {name}: Score {value_of(name, SCORE)}, Sp {value_of(name, SPECIFICITY)}, "
                f"Se {value_of(name, SENSITIVITY)} ({int(matrix.sum())} cycles)"
                for name, matrix in self.device_confusion.items()
            ),
            "confusion matrix (rows: true, columns: predicted):",
            format_confusion(self.confusion),
        ]
        if self.plot_path is not None:
            lines.append(f"confusion plot: {self.plot_path}")
        return "\n".join(lines)


def plot_confusion(matrix: np.ndarray, path: str | os.PathLike[str], *, title: str) -> None:
    """Writes the confusion matrix as a PNG heat map (Agg; no display needed), atomically."""
    from matplotlib.figure import Figure

    path = Path(path)
    size = matrix.shape[0]
    names = list(CLASS_NAMES[:size]) if size <= len(CLASS_NAMES) else [str(i) for i in range(size)]
    figure = Figure(figsize=(4.8, 4.2), dpi=120)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(size), labels=names)
    axes.set_yticks(range(size), labels=names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    threshold = matrix.max(initial=0) / 2.0
    for row in range(size):
        for column in range(size):
            count = int(matrix[row, column])
            color = "white" if count > threshold else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=color)
    figure.tight_layout()
    save_figure(figure, path)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    split: str = SPLIT_TEST,
    output_dir: str | os.PathLike[str] | None = None,
    feature_set: FeatureSet | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> EvalReport:
    """Evaluates a lungsrad checkpoint (best.pt or an epoch checkpoint) on one split.

    The model, preprocessing and splits come from the config embedded in the checkpoint.

    Args:
        checkpoint: file written by `lungsrad train`.
        data_root: dataset folder; None: the checkpoint config's data.root.
        split: "test" (official test), "val" (the patient-disjoint carve-out of the config's
            data.validation_fraction / data.split_seed) or "train" (the run's training cycles).
        output_dir: when given, writes confusion_<split>.png and evaluation_<split>.json there.
        feature_set: precomputed features (skips building them).
        device: "auto", "cpu", "cuda[:N]"; None: the config's train.device.
        show_progress: progress bar while features are built.

    Returns:
        The EvalReport.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    trained = load_trained_model(checkpoint, device=device)
    config = trained.config
    if data_root is not None:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, root=str(data_root))
        )
    with cpu_threads(config.train.num_threads):
        if feature_set is None:
            feature_set = build_feature_set(
                config.data, config.data.root, show_progress=show_progress
            )
        indices = _split_cycles(feature_set, config, split)
        scores, confusion, device_confusion = evaluate_split_by_device(
            trained.model,
            feature_set.features.to(trained.device),
            feature_set.labels,
            indices,
            devices=tuple(device_of(name) for name in feature_set.recordings),
            batch_size=config.train.eval_batch_size,
            amp_dtype=resolve_amp_dtype(config.train.amp, trained.device),
            num_classes=config.model.num_classes,
            model_frames=config.data.model_frames,
        )
    report = EvalReport(
        checkpoint=trained.path,
        split=split,
        epoch=trained.epoch,
        num_cycles=len(indices),
        metrics={
            **{metric_name(split, key): value for key, value in scores.items()},
            **detailed_metrics(split, confusion, device_confusion),
        },
        confusion=confusion,
        device=str(trained.device),
        device_confusion=device_confusion,
    )
    if output_dir is not None:
        _write_report(report, Path(output_dir), score=scores[SCORE])
    return report


def _split_cycles(feature_set: FeatureSet, config: ExperimentConfig, split: str) -> np.ndarray:
    """Indices of `split`'s cycles under the run's protocol ("val" of a 'paper' run: warned,
    and carved out as a 'validated' run would)."""
    protocol = config.train.protocol
    if split == SPLIT_VALIDATION and protocol not in VALIDATION_PROTOCOLS:
        warnings.warn(
            "this run used protocol 'paper': its 'val' patients were part of its training data",
            stacklevel=3,
        )
        protocol = "validated"
    return split_indices(
        feature_set,
        protocol=protocol,
        validation_fraction=config.data.validation_fraction,
        seed=config.data.split_seed,
        fold=config.data.fold,
    )[split]


def _write_report(report: EvalReport, output_dir: Path, *, score: float) -> None:
    """confusion_<split>.png and evaluation_<split>.json in `output_dir`."""
    split = report.split
    report.plot_path = output_dir / f"confusion_{split}.png"
    plot_confusion(
        report.confusion,
        report.plot_path,
        title=f"{report.checkpoint.name} (epoch {report.epoch}), {split}: Score {score:.2f}",
    )
    write_text_atomic(
        output_dir / f"evaluation_{split}.json", json.dumps(report.to_dict(), indent=2) + "\n"
    )
