"""`run_experiment`: one Lung-SRAD training run (features, model, epochs, evaluation, checkpoints,
resume) reporting through `TrainingCallback`, so sweeps and trackers plug in without this
library importing them.

Outputs under `output_dir`: config.yaml, metrics.jsonl (one line per epoch),
checkpoints/epoch_NNNN/checkpoint.pt (latest few + the selected epoch), best.pt, result.json.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import lungsrad
from lungsrad.config import (
    VALIDATION_PROTOCOLS,
    ExperimentConfig,
    TrainConfig,
    dump_config,
    save_config,
)
from lungsrad.data.features import FeatureSet, build_feature_set
from lungsrad.data.layout import device_of
from lungsrad.data.loaders import split_indices
from lungsrad.files import write_text_atomic
from lungsrad.method.patch_mix import PatchMixObjective
from lungsrad.metrics import (
    ACCURACY,
    CLASS_NAMES,
    EPOCH,
    EVAL_KEYS,
    REPORT_EPOCH,
    REPORT_PREFIX,
    REPORT_SCORE,
    SCORE,
    SCORE_2CLASS,
    SELECTION_SCORE,
    SENSITIVITY,
    SENSITIVITY_2CLASS,
    SPECIFICITY,
    SPECIFICITY_2CLASS,
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
    TRAIN_CAPTURE_SECONDS,
    TRAIN_LOSS,
    TRAIN_SAMPLES_PER_SECOND,
    detailed_metrics,
    device_metric_name,
    metric_name,
)
from lungsrad.models import Backbone
from lungsrad.training.checkpoints import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    check_resume_config,
    checkpoint_config,
    epoch_checkpoints,
    epoch_folder,
    find_resumable_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    read_resumable_checkpoint,
    remove_stale_temporary_files,
    save_atomic,
)
from lungsrad.training.loop import (
    EpochData,
    NonFiniteLossError,
    TrainStep,
    check_capture,
    conform_optimizer,
    train_one_epoch,
)
from lungsrad.training.optimization import build_optimizer, learning_rate_factor
from lungsrad.training.runtime import (
    amp_name,
    build_classifier,
    cpu_threads,
    device_name,
    evaluate_split_by_device,
    resolve_amp_dtype,
    resolve_device,
    scan_backend_name,
)

__all__ = [
    "NonFiniteLossError",
    "RunInfo",
    "RunResult",
    "TrainingCallback",
    "run_experiment",
]

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
RESULT_FILE = "result.json"
# Per-epoch checkpoints kept besides the selected epoch's (older ones are pruned).
KEEP_LAST_CHECKPOINTS = 2


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
                f"{label} {_format_percent(report.get(metric_name(REPORT_PREFIX, key)))}"
                for label, key in (
                    ("ICBHI Score", SCORE),
                    ("Sp", SPECIFICITY),
                    ("Se", SENSITIVITY),
                    ("accuracy", ACCURACY),
                )
            ),
            "2-class: "
            + ", ".join(
                f"{label} {_format_percent(report.get(metric_name(REPORT_PREFIX, key)))}"
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
            cells = ", ".join(f"{label} {_format_percent(v)}" for label, v in values.items())
            lines.append(f"  {device}: {cells}")
        return ["test per device:", *lines] if lines else []


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


# ---------------------------------------------------------------------------------------------
# Helpers


def _format_percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.2f}"


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


def _json_line(metrics: Mapping[str, float]) -> str:
    return json.dumps(_json_safe(metrics), allow_nan=False) + "\n"


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


def _say(message: str, show_progress: bool) -> None:
    if show_progress:
        tqdm.write(message)


@dataclass
class _Progress:
    """What a checkpoint restores besides module states."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    train_seconds: float = 0.0
    start_epoch: int = 1


def _locate_resume_checkpoint(
    config: ExperimentConfig,
    output_dir: Path,
    *,
    resume: bool,
    resume_from: str | os.PathLike[str] | None,
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from (None: fresh run), its config checked against `config`."""
    if resume_from is not None:
        path = Path(resume_from)
        payload = read_resumable_checkpoint(path)
    elif resume:
        found = find_resumable_checkpoint(output_dir)
        if found is None:
            return None
        path, payload = found
    else:
        if epoch_checkpoints(output_dir):
            raise FileExistsError(
                f"{output_dir} already holds checkpoints of a run; resume it or choose another "
                "output folder"
            )
        return None
    check_resume_config(checkpoint_config(payload, path=path), config, path=path)
    return path, payload


def _drop_later_epochs(output_dir: Path, epoch: int) -> None:
    # Checkpoints after the one resumed from belong to an abandoned history; a later resume
    # must not pick them up.
    for later, path in epoch_checkpoints(output_dir):
        if later > epoch:
            shutil.rmtree(path.parent, ignore_errors=True)


def _restore_best_file(
    output_dir: Path, best: Mapping[str, Any] | None, *, resumed_elsewhere: bool
) -> None:
    """Makes best.pt hold the selected epoch's model again after a resume, when possible.

    `resumed_elsewhere`: the run continues from a checkpoint file outside output_dir (a Ray Tune
    restore); the selected epoch's checkpoint is then expected to be absent, so say nothing.
    """
    if best is None:
        return
    best_path = output_dir / BEST_FILE
    if best_path.is_file():
        try:
            if read_checkpoint(best_path).get("epoch") == best["epoch"]:
                return
        except CheckpointError:
            pass
    source = epoch_folder(output_dir, best["epoch"]) / CHECKPOINT_FILE
    try:
        payload = read_checkpoint(source)
    except (FileNotFoundError, CheckpointError):
        best_path.unlink(missing_ok=True)
        if resumed_elsewhere:
            return
        warnings.warn(
            f"best.pt for epoch {best['epoch']} cannot be restored in {output_dir} (its epoch "
            "checkpoint is not there); it is written again when a later epoch is selected",
            stacklevel=4,
        )
        return
    save_atomic(_best_payload(payload), best_path)


def _best_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("format", "format_version", "lungsrad_version", "config", "epoch", "model")
    best = {key: payload[key] for key in keys}
    best["objective"] = payload.get("objective")
    best["metrics"] = payload["history"][-1] if payload.get("history") else {}
    best["data_fingerprint"] = payload.get("data_fingerprint")
    return best


@dataclass
class TrainingParts:
    """What trains a run: the model, the patch-mix objective, the optimizer and its schedule."""

    model: Backbone
    objective: PatchMixObjective
    optimizer: torch.optim.Optimizer  # Adam or AdamW over the trained parameters
    scheduler: torch.optim.lr_scheduler.LRScheduler  # per-epoch learning_rate_factor
    grad_scaler: torch.amp.GradScaler | None  # fp16 AMP only
    amp_dtype: torch.dtype | None
    train: TrainConfig
    model_frames: int | None = None  # data.model_frames: batches are resized to it

    def train_step(self, data: EpochData, *, capture: bool) -> TrainStep:
        """The run's TrainStep over `data` (capture: CUDA graphs; needs capture_step's Adam)."""
        return TrainStep(
            model=self.model,
            objective=self.objective,
            optimizer=self.optimizer,
            grad_scaler=self.grad_scaler,
            data=data,
            train=self.train,
            amp_dtype=self.amp_dtype,
            model_frames=self.model_frames,
            capture=capture,
        )


def build_training_parts(
    config: ExperimentConfig, device: torch.device, *, load_initial_checkpoint: bool = True
) -> TrainingParts:
    """Model (seeded by train.seed), objective, optimiser, schedule and GradScaler of a run on
    `device`.

    The optimiser (train.optimizer) holds the parameters that train: a projection head with
    method.patch_mix.train_projector false is left out. With train.capture_step it is
    capturable and its lr a device tensor (the form a captured step needs); ValueError when the
    step cannot be captured on `device`.
    """
    train = config.train
    amp_dtype = resolve_amp_dtype(train.amp, device)
    if train.capture_step:
        check_capture(device, amp_dtype)
    torch.manual_seed(train.seed)
    model = build_classifier(config, device, load_initial_checkpoint=load_initial_checkpoint)
    objective = PatchMixObjective(
        num_features=model.num_features, config=config.method.patch_mix
    ).to(device)
    parameters = [
        parameter
        for parameter in [*model.parameters(), *objective.parameters()]
        if parameter.requires_grad
    ]
    optimizer = build_optimizer(parameters, train, capturable=train.capture_step)
    conform_optimizer(optimizer, capturable=train.capture_step, device=device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch_index: learning_rate_factor(epoch_index, train)
    )
    grad_scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    return TrainingParts(
        model=model,
        objective=objective,
        optimizer=optimizer,
        scheduler=scheduler,
        grad_scaler=grad_scaler,
        amp_dtype=amp_dtype,
        train=train,
        model_frames=config.data.model_frames,
    )


def _prepare_output_dir(
    config: ExperimentConfig,
    output_dir: Path,
    progress: _Progress,
    *,
    is_resumed: bool,
    resumed_elsewhere: bool,
) -> None:
    """config.yaml, metrics.jsonl up to the resumed epoch, best.pt of the selected epoch, and no
    result.json until the run finishes."""
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary_files(output_dir)
    save_config(config, output_dir / CONFIG_FILE)
    # Rewritten from the checkpoint's history: a crash between a checkpoint and its metrics line
    # (or during an append) leaves neither a gap nor a duplicate.
    write_text_atomic(
        output_dir / METRICS_FILE, "".join(_json_line(row) for row in progress.history)
    )
    if is_resumed:
        _restore_best_file(output_dir, progress.best, resumed_elsewhere=resumed_elsewhere)
    (output_dir / RESULT_FILE).unlink(missing_ok=True)


def _restore_progress(
    resume_point: tuple[Path, dict[str, Any]],
    parts: TrainingParts,
    *,
    fingerprint: str,
    device: torch.device,
) -> _Progress:
    """Loads the module and optimiser states of a resume checkpoint; its history and best."""
    path, payload = resume_point
    if payload.get("data_fingerprint") != fingerprint:
        # Not an error: the fingerprint covers wav modification times, which a copy of the
        # same data to another node (e.g. a Ray restore) need not keep.
        warnings.warn(
            f"{path} was trained on features with another fingerprint "
            f"({payload.get('data_fingerprint')}, now {fingerprint}); "
            "continuing, but the run only replays exactly on identical data",
            stacklevel=3,
        )
    parts.model.load_state_dict(payload["model"])
    parts.objective.load_state_dict(payload["objective"])
    parts.optimizer.load_state_dict(payload["optimizer"])
    conform_optimizer(parts.optimizer, capturable=parts.train.capture_step, device=device)
    parts.scheduler.load_state_dict(payload["scheduler"])
    if parts.grad_scaler is not None and payload.get("grad_scaler"):
        parts.grad_scaler.load_state_dict(payload["grad_scaler"])
    return _Progress(
        history=list(payload["history"]),
        best=payload["best"],
        train_seconds=float(payload.get("train_seconds", 0.0)),
        start_epoch=int(payload["epoch"]) + 1,
    )


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
    progress: _Progress,
    fingerprint: str,
) -> dict[str, Any]:
    """Everything a resume needs after `epoch` (see `_restore_progress`)."""
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
    config: ExperimentConfig, *, output_dir: Path, progress: _Progress, info: RunInfo
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
            stacklevel=3,
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

    Returns:
        The RunResult (also written to output_dir/result.json).

    Raises:
        ValueError: bad config or data; a checkpoint from another config (CheckpointError).
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
        )


@dataclass
class _Session:
    """What `_run` sets up before its first epoch."""

    parts: TrainingParts
    feature_set: FeatureSet
    splits: dict[str, np.ndarray]
    eval_splits: list[str]
    selection_split: str
    devices: tuple[str, ...]  # recording device per cycle
    data: EpochData
    info: RunInfo
    progress: _Progress


def _set_up(
    config: ExperimentConfig,
    *,
    output_dir: Path,
    feature_set: FeatureSet | None,
    resume: bool,
    resume_from: str | os.PathLike[str] | None,
    device: str | None,
    show_progress: bool,
) -> _Session:
    """Model, features, splits, the resumed progress and the prepared output folder of a run."""
    train = config.train
    torch_device = resolve_device(device if device is not None else train.device)
    resume_point = _locate_resume_checkpoint(
        config, output_dir, resume=resume, resume_from=resume_from
    )
    # The model before the features, so a bad model.checkpoint fails before any feature work.
    parts = build_training_parts(config, torch_device, load_initial_checkpoint=resume_point is None)
    if feature_set is None:
        feature_set = build_feature_set(config.data, config.data.root, show_progress=show_progress)
    splits = split_indices(
        feature_set,
        protocol=train.protocol,
        validation_fraction=config.data.validation_fraction,
        seed=config.data.split_seed,
        fold=config.data.fold,
    )
    uses_validation = train.protocol in VALIDATION_PROTOCOLS
    progress = _Progress()
    if resume_point is not None:
        progress = _restore_progress(
            resume_point, parts, fingerprint=feature_set.fingerprint, device=torch_device
        )
        _drop_later_epochs(output_dir, progress.start_epoch - 1)
        _say(f"resuming from {resume_point[0]} (epoch {progress.start_epoch - 1})", show_progress)
    _prepare_output_dir(
        config,
        output_dir,
        progress,
        is_resumed=resume_point is not None,
        resumed_elsewhere=resume_from is not None,
    )
    data = EpochData(
        features=feature_set.features.to(torch_device),
        labels=feature_set.labels.to(torch_device),
        train_indices=torch.as_tensor(splits[SPLIT_TRAIN], dtype=torch.int64).to(torch_device),
    )
    info = RunInfo(
        device=str(torch_device),
        device_name=device_name(torch_device),
        scan_backend=scan_backend_name(parts.model, torch_device),
        data_fingerprint=feature_set.fingerprint,
        seed=train.seed,
        num_parameters=sum(p.numel() for p in parts.model.parameters()),
        start_epoch=progress.start_epoch,
        split_sizes={name: len(indices) for name, indices in splits.items()},
        amp_dtype=amp_name(parts.amp_dtype),
        capture_step=train.capture_step,
    )
    return _Session(
        parts=parts,
        feature_set=feature_set,
        splits=splits,
        eval_splits=[SPLIT_VALIDATION, SPLIT_TEST] if uses_validation else [SPLIT_TEST],
        selection_split=SPLIT_VALIDATION if uses_validation else SPLIT_TEST,
        devices=tuple(device_of(name) for name in feature_set.recordings),
        data=data,
        info=info,
        progress=progress,
    )


def _select_epoch(
    session: _Session,
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
) -> RunResult:
    train = config.train
    session = _set_up(
        config,
        output_dir=output_dir,
        feature_set=feature_set,
        resume=resume,
        resume_from=resume_from,
        device=device,
        show_progress=show_progress,
    )
    parts, progress, info = session.parts, session.progress, session.info
    step_function = parts.train_step(session.data, capture=train.capture_step)
    for callback in callbacks:
        callback.on_run_start(info)
    if progress.start_epoch == 1:
        _say(
            f"training '{config.name}' on {info.device} ({info.device_name}), "
            f"amp {info.amp_dtype}, seed {info.seed}, {info.num_parameters:,} parameters, "
            f"splits {info.split_sizes}",
            show_progress,
        )
    config_text = dump_config(config)
    for epoch in range(progress.start_epoch, train.num_epochs + 1):
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

    result = _run_result(config, output_dir=output_dir, progress=progress, info=info)
    write_text_atomic(output_dir / RESULT_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
    for callback in callbacks:
        callback.on_run_end(result)
    return result


def _save_epoch(
    session: _Session,
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
        save_atomic(_best_payload(payload), output_dir / BEST_FILE)
    with open(output_dir / METRICS_FILE, "a", encoding="utf-8") as stream:
        stream.write(_json_line(metrics))
    train = session.parts.train
    _say(
        f"epoch {epoch}/{train.num_epochs}: loss {metrics[TRAIN_LOSS]:.4f}, "
        f"{session.selection_split} score {_format_percent(metrics[SELECTION_SCORE])}, "
        f"reported test score {_format_percent(metrics[REPORT_SCORE])} "
        f"(epoch {progress.best['epoch']}), "
        f"{metrics[TRAIN_SAMPLES_PER_SECOND]:.1f} samples/s",
        show_progress,
    )
    for callback in callbacks:
        callback.on_epoch_end(epoch, dict(metrics), folder)
    prune_checkpoints(
        output_dir, keep_last=KEEP_LAST_CHECKPOINTS, keep_epochs={progress.best["epoch"]}
    )
