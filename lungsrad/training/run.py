"""`run_experiment`: one Lung-SRAD training run (features, model, epochs, evaluation, checkpoints,
resume) reporting through `TrainingCallback`, so sweeps and trackers plug in without this
library importing them. Set-up is lungsrad/training/setup.py, resume resume.py, the result types
result.py; this module tells the story of a run: set up, train and save each epoch, finish.

Outputs under `output_dir`: config.yaml, metrics.jsonl (one line per epoch),
checkpoints/epoch_NNNN/checkpoint.pt (latest few + the selected epoch), best.pt, result.json.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lungsrad
from lungsrad.checkpoint_format import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION
from lungsrad.config import ExperimentConfig, TrainConfig, dump_config
from lungsrad.data.features import FeatureSet
from lungsrad.files import write_text_atomic
from lungsrad.metrics import (
    EPOCH,
    EVAL_KEYS,
    REPORT_EPOCH,
    REPORT_PREFIX,
    REPORT_SCORE,
    SCORE,
    SELECTION_SCORE,
    SENSITIVITY,
    SPLIT_TEST,
    TRAIN_LOSS,
    TRAIN_SAMPLES_PER_SECOND,
    detailed_metrics,
    metric_name,
    prediction_metrics,
)
from lungsrad.models import InitialWeights
from lungsrad.training.checkpoint_files import (
    BEST_FILE,
    CHECKPOINT_FILE,
    METRICS_FILE,
    RESULT_FILE,
    epoch_folder,
    prune_checkpoints,
    save_atomic,
)
from lungsrad.training.loop import train_one_epoch
from lungsrad.training.result import RunInfo, RunResult, format_percent, json_line
from lungsrad.training.resume import RunProgress, best_payload
from lungsrad.training.runtime import cpu_threads, evaluate_split_by_device
from lungsrad.training.setup import RunSession, TrainingParts, say, set_up_run
from lungsrad.training.train_step import NonFiniteLossError, TrainStep

# The public surface of a run: what a caller of run_experiment passes, gets back and catches.
__all__ = [
    "NonFiniteLossError",
    "RunInfo",
    "RunResult",
    "TrainingCallback",
    "run_experiment",
]

# Per-epoch checkpoints kept besides the selected epoch's (older ones are pruned).
KEEP_LAST_CHECKPOINTS = 2


class TrainingCallback:
    """Hooks into a run; subclass and override. The defaults do nothing."""

    def on_run_start(self, info: RunInfo) -> None:
        """Called once the run is set up, before the first epoch this call trains."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        """Called after each epoch, once its checkpoint is safely on disk.

        Args:
            epoch: 1-based epoch number.
            metrics: lungsrad.metrics constants -> values (train/..., test/..., val/...,
                selection/icbhi_score, report/..., epoch).
            checkpoint_dir: a folder holding only this epoch's checkpoint.pt; it stays until
                a later epoch's checkpoint is written and it is pruned.
        """

    def on_run_end(self, result: RunResult) -> None:
        """Called once after the last epoch."""


def _is_better(score: float, best: Mapping[str, Any] | None, *, qualifies: bool = True) -> bool:
    """Whether an epoch replaces the selected one.

    An epoch that meets the sensitivity guard (train.min_sensitivity) always beats one that does
    not; among epochs on the same side, strictly better wins (NaN never is; the first epoch
    always is). Records without a "qualifies" key (checkpoints of older runs) qualify.
    """
    if best is None:
        return True
    best_qualifies = bool(best.get("qualifies", True))
    if qualifies != best_qualifies:
        return qualifies
    if math.isnan(score):
        return False
    return math.isnan(best["selection_score"]) or score > best["selection_score"]


def meets_min_sensitivity(sensitivity: float, train: TrainConfig) -> bool:
    """The reference's epoch guard (main.py `validate`: `sc > best and se > 5`): with
    train.min_sensitivity set, an epoch counts only when its Se (percent, on the selection
    split) is above it. NaN never is."""
    if train.min_sensitivity is None:
        return True
    return bool(sensitivity > train.min_sensitivity)


@dataclass
class _Evaluation:
    """One epoch's evaluation of every split: metrics, confusion overall and per device."""

    metrics: dict[str, float]  # split metrics, per-device and per-class ones included
    confusions: dict[str, np.ndarray]  # split -> (num_classes, num_classes)
    device_confusions: dict[str, dict[str, np.ndarray]]  # split -> device -> matrix

    def best_record(
        self, epoch: int, selection_score: float, *, qualifies: bool = True
    ) -> dict[str, Any]:
        """What a checkpoint keeps of the selected epoch: its test metrics as `report/...`, and
        whether it met train.min_sensitivity."""
        test, by_device = self.confusions[SPLIT_TEST], self.device_confusions[SPLIT_TEST]
        return {
            "epoch": epoch,
            "selection_score": selection_score,
            "qualifies": qualifies,
            "report": {
                **{
                    metric_name(REPORT_PREFIX, key): self.metrics[metric_name(SPLIT_TEST, key)]
                    for key in EVAL_KEYS
                },
                **detailed_metrics(REPORT_PREFIX, test, by_device),
                **prediction_metrics(REPORT_PREFIX, test),
                REPORT_EPOCH: float(epoch),
            },
            "confusion": test.tolist(),
            "device_confusion": {device: matrix.tolist() for device, matrix in by_device.items()},
        }


def _evaluate_epoch(
    model: torch.nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    splits: dict[str, np.ndarray],
    *,
    devices: tuple[str, ...],
    config: ExperimentConfig,
    amp_dtype: torch.dtype | None,
) -> _Evaluation:
    """ICBHI metrics of each split in `splits`, overall, per recording device and per class."""
    evaluation = _Evaluation(metrics={}, confusions={}, device_confusions={})
    for split, indices in splits.items():
        scores, confusion, by_device = evaluate_split_by_device(
            model,
            features,
            labels,
            indices,
            devices=devices,
            batch_size=config.train.eval_batch_size,
            amp_dtype=amp_dtype,
            num_classes=config.model.num_classes,
            model_frames=config.data.model_frames,
        )
        evaluation.confusions[split] = confusion
        evaluation.device_confusions[split] = by_device
        evaluation.metrics.update({metric_name(split, key): value for key, value in scores.items()})
        evaluation.metrics.update(detailed_metrics(split, confusion, by_device))
    return evaluation


def _checkpoint_payload(
    parts: TrainingParts,
    *,
    config_text: str,
    epoch: int,
    progress: RunProgress,
    fingerprint: str,
) -> dict[str, Any]:
    """Everything a resume needs after `epoch` (see `lungsrad.training.setup`)."""
    grad_scaler = parts.grad_scaler
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "lungsrad_version": lungsrad.__version__,
        "config": config_text,
        "epoch": epoch,
        "model": parts.model.state_dict(),
        "objective": parts.objective.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "grad_scaler": grad_scaler.state_dict() if grad_scaler is not None else None,
        # No RNG state is needed: every stream of epoch e is re-derived from (seed, e).
        "rng": {"scheme": "numpy.SeedSequence([seed, epoch, stream])", "seed": parts.train.seed},
        "history": progress.history,
        "best": progress.best,
        "data_fingerprint": fingerprint,
        "train_seconds": progress.train_seconds,
    }


def _run_result(
    config: ExperimentConfig, *, output_dir: Path, progress: RunProgress, info: RunInfo
) -> RunResult:
    """The RunResult of a finished run, from its progress (history and selected epoch)."""
    best = progress.best
    assert best is not None  # num_epochs >= 1 and a checkpoint holds >= 1 epoch
    guard = config.train.min_sensitivity
    met = None if guard is None else bool(best.get("qualifies", True))
    if met is False:
        warnings.warn(
            f"no epoch had a sensitivity above train.min_sensitivity ({guard}); the reported "
            f"epoch {best['epoch']} is the best regardless of Se (result.json: "
            "min_sensitivity_met false)",
            stacklevel=4,
        )
    return RunResult(
        output_dir=output_dir,
        best_epoch=int(best["epoch"]),
        report=dict(best["report"]),
        history=progress.history,
        confusion=np.asarray(best["confusion"], dtype=np.int64),
        info=info,
        train_seconds=progress.train_seconds,
        protocol=config.train.protocol,
        name=config.name,
        device_confusion={
            device: np.asarray(matrix, dtype=np.int64)
            for device, matrix in best.get("device_confusion", {}).items()
        },
        min_sensitivity_met=met,
    )


# ---------------------------------------------------------------------------------------------
# The run


def run_experiment(
    config: ExperimentConfig,
    *,
    output_dir: str | os.PathLike[str],
    feature_set: FeatureSet | None = None,
    callbacks: Sequence[TrainingCallback] = (),
    resume: bool = True,
    resume_from: str | os.PathLike[str] | None = None,
    device: str | None = None,
    show_progress: bool = True,
    initial_weights: InitialWeights | None = None,
) -> RunResult:
    """Trains and evaluates one configuration.

    Every random draw of epoch e (shuffle, SpecAugment, patch-mix, drop path) comes from streams
    seeded by (train.seed, e), so a run resumed from the checkpoint of epoch e - 1 replays
    exactly what the uninterrupted run would have done (bit-for-bit on CPU).

    Args:
        config: the run config.
        output_dir: folder for checkpoints, metrics.jsonl, config.yaml, best.pt, result.json.
        feature_set: precomputed features (a sweep passes them); None: built from data.root.
        callbacks: receive on_run_start / on_epoch_end / on_run_end.
        resume: continue from the newest valid checkpoint in output_dir when there is one;
            False refuses an output_dir that already holds checkpoints.
        resume_from: continue from this checkpoint file instead (e.g. a Ray Tune restore).
        device: "cpu", "cuda", "cuda:N" or "auto"; None: train.device.
        show_progress: tqdm bars and one summary line per epoch.
        initial_weights: model.checkpoint's weights read elsewhere (a sweep driver's): the
            model starts from them and the checkpoint's file is never opened.

    Returns:
        The RunResult (also written to output_dir/result.json).

    Raises:
        UserError: bad config or data; a checkpoint from another config (CheckpointError).
        FileExistsError: resume=False and output_dir already holds checkpoints.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    with cpu_threads(config.train.num_threads):
        return _run(
            config,
            output_dir=Path(output_dir),
            feature_set=feature_set,
            callbacks=callbacks,
            resume=resume,
            resume_from=resume_from,
            device=device,
            show_progress=show_progress,
            initial_weights=initial_weights,
        )


def _run(
    config: ExperimentConfig,
    *,
    output_dir: Path,
    feature_set: FeatureSet | None,
    callbacks: Sequence[TrainingCallback],
    resume: bool,
    resume_from: str | os.PathLike[str] | None,
    device: str | None,
    show_progress: bool,
    initial_weights: InitialWeights | None = None,
) -> RunResult:
    """The story of one run: set up, train and save each epoch, finish."""
    session = set_up_run(
        config,
        output_dir=output_dir,
        feature_set=feature_set,
        resume=resume,
        resume_from=resume_from,
        device=device,
        show_progress=show_progress,
        initial_weights=initial_weights,
    )
    step_function = session.parts.train_step(session.data, capture=config.train.capture_step)
    _start(config, session, callbacks=callbacks, show_progress=show_progress)
    config_text = dump_config(config)
    for epoch in range(session.progress.start_epoch, config.train.num_epochs + 1):
        metrics, improved = _train_epoch(
            config, session, step_function, epoch=epoch, show_progress=show_progress
        )
        _save_epoch(
            session,
            metrics,
            epoch=epoch,
            improved=improved,
            config_text=config_text,
            output_dir=output_dir,
            callbacks=callbacks,
            show_progress=show_progress,
        )
    return _finish(config, session, output_dir=output_dir, callbacks=callbacks)


def _start(
    config: ExperimentConfig,
    session: RunSession,
    *,
    callbacks: Sequence[TrainingCallback],
    show_progress: bool,
) -> None:
    """Tells the callbacks the run is set up; a fresh run says what it trains."""
    info = session.info
    for callback in callbacks:
        callback.on_run_start(info)
    if session.progress.start_epoch == 1:
        say(
            f"training '{config.name}' on {info.device} ({info.device_name}), "
            f"amp {info.amp_dtype}, seed {info.seed}, {info.num_parameters:,} parameters, "
            f"splits {info.split_sizes}",
            show_progress,
        )


def _train_epoch(
    config: ExperimentConfig,
    session: RunSession,
    step_function: TrainStep,
    *,
    epoch: int,
    show_progress: bool,
) -> tuple[dict[str, float], bool]:
    """Trains and evaluates one epoch and records it in the progress; returns its metrics (the
    selected epoch's report included) and whether it became the selected epoch."""
    train = config.train
    parts, progress = session.parts, session.progress
    started = time.perf_counter()
    metrics: dict[str, float] = {EPOCH: float(epoch)}
    metrics.update(
        train_one_epoch(
            step_function=step_function,
            data=session.data,
            train=train,
            seed=train.seed,
            epoch=epoch,
            show_progress=show_progress,
        )
    )
    parts.scheduler.step()
    evaluation = _evaluate_epoch(
        parts.model,
        session.data.features,
        session.feature_set.labels,
        {split: session.splits[split] for split in session.eval_splits},
        devices=session.devices,
        config=config,
        amp_dtype=parts.amp_dtype,
    )
    metrics.update(evaluation.metrics)
    improved = _select_epoch(session, evaluation, metrics, epoch=epoch, train=train)
    progress.history.append(metrics)
    progress.train_seconds += time.perf_counter() - started
    return metrics, improved


def _select_epoch(
    session: RunSession,
    evaluation: _Evaluation,
    metrics: dict[str, float],
    *,
    epoch: int,
    train: TrainConfig,
) -> bool:
    """Records the epoch's selection score and makes it the selected epoch when it is better
    (train.min_sensitivity applied); adds the selected epoch's report to `metrics`."""
    split = session.selection_split
    selection_score = metrics[metric_name(split, SCORE)]
    metrics[SELECTION_SCORE] = selection_score
    qualifies = meets_min_sensitivity(metrics[metric_name(split, SENSITIVITY)], train)
    progress = session.progress
    improved = _is_better(selection_score, progress.best, qualifies=qualifies)
    if improved:
        progress.best = evaluation.best_record(epoch, selection_score, qualifies=qualifies)
    assert progress.best is not None
    metrics.update(progress.best["report"])
    return improved


def _finish(
    config: ExperimentConfig,
    session: RunSession,
    *,
    output_dir: Path,
    callbacks: Sequence[TrainingCallback],
) -> RunResult:
    """The run's result, written to result.json and handed to the callbacks."""
    progress, info = session.progress, session.info
    result = _run_result(config, output_dir=output_dir, progress=progress, info=info)
    write_text_atomic(output_dir / RESULT_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
    for callback in callbacks:
        callback.on_run_end(result)
    return result


def _save_epoch(
    session: RunSession,
    metrics: dict[str, float],
    *,
    epoch: int,
    improved: bool,
    config_text: str,
    output_dir: Path,
    callbacks: Sequence[TrainingCallback],
    show_progress: bool,
) -> None:
    """The epoch's checkpoint (and best.pt), metrics line, summary, callbacks and pruning."""
    progress = session.progress
    assert progress.best is not None
    payload = _checkpoint_payload(
        session.parts,
        config_text=config_text,
        epoch=epoch,
        progress=progress,
        fingerprint=session.feature_set.fingerprint,
    )
    folder = epoch_folder(output_dir, epoch)
    save_atomic(payload, folder / CHECKPOINT_FILE)
    if improved:
        save_atomic(best_payload(payload), output_dir / BEST_FILE)
    with open(output_dir / METRICS_FILE, "a", encoding="utf-8") as stream:
        stream.write(json_line(metrics))
    train = session.parts.train
    say(
        f"epoch {epoch}/{train.num_epochs}: loss {metrics[TRAIN_LOSS]:.4f}, "
        f"{session.selection_split} score {format_percent(metrics[SELECTION_SCORE])}, "
        f"reported test score {format_percent(metrics[REPORT_SCORE])} "
        f"(epoch {progress.best['epoch']}), "
        f"{metrics[TRAIN_SAMPLES_PER_SECOND]:.1f} samples/s",
        show_progress,
    )
    for callback in callbacks:
        callback.on_epoch_end(epoch, dict(metrics), folder)
    prune_checkpoints(
        output_dir, keep_last=KEEP_LAST_CHECKPOINTS, keep_epochs={progress.best["epoch"]}
    )
