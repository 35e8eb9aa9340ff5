"""Set-up of a run: the parts that train it (`TrainingParts`: model, objective, optimiser,
schedule) and the session around them (`RunSession`: features, splits, resumed progress, the
prepared output folder and the `RunInfo` trackers log).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lungsrad.config import VALIDATION_PROTOCOLS, ExperimentConfig, TrainConfig
from lungsrad.data.features import FeatureSet, build_feature_set
from lungsrad.data.layout import device_of
from lungsrad.data.loaders import split_indices
from lungsrad.method.patch_mix import PatchMixObjective
from lungsrad.metrics import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALIDATION
from lungsrad.models import Backbone, InitialWeights
from lungsrad.training.optimization import build_optimizer, learning_rate_factor
from lungsrad.training.result import RunInfo
from lungsrad.training.resume import (
    RunProgress,
    drop_later_epochs,
    locate_resume_checkpoint,
    prepare_output_dir,
)
from lungsrad.training.runtime import (
    amp_name,
    build_classifier,
    device_name,
    resolve_amp_dtype,
    resolve_device,
    scan_backend_name,
)
from lungsrad.training.train_step import EpochData, TrainStep, check_capture, conform_optimizer


def say(message: str, show_progress: bool) -> None:
    """Prints a line above the progress bars when progress is shown."""
    if show_progress:
        tqdm.write(message)


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
    config: ExperimentConfig,
    device: torch.device,
    *,
    load_initial_checkpoint: bool = True,
    initial_weights: InitialWeights | None = None,
) -> TrainingParts:
    """Model (seeded by train.seed), objective, optimiser, schedule and GradScaler of a run on
    `device`; the model starts from `initial_weights` when given (model.checkpoint's weights
    read elsewhere: its file is not opened).

    The optimiser (train.optimizer) holds the parameters that train: a projection head with
    method.patch_mix.train_projector false is left out. With train.capture_step it is
    capturable and its lr a device tensor (the form a captured step needs); UserError when the
    step cannot be captured on `device`.
    """
    train = config.train
    amp_dtype = resolve_amp_dtype(train.amp, device)
    if train.capture_step:
        check_capture(device, amp_dtype)
    torch.manual_seed(train.seed)
    model = build_classifier(
        config,
        device,
        load_initial_checkpoint=load_initial_checkpoint,
        initial_weights=initial_weights,
    )
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


def _restore_progress(
    resume_point: tuple[Path, dict[str, Any]],
    parts: TrainingParts,
    *,
    fingerprint: str,
    device: torch.device,
) -> RunProgress:
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
    return RunProgress(
        history=list(payload["history"]),
        best=payload["best"],
        train_seconds=float(payload.get("train_seconds", 0.0)),
        start_epoch=int(payload["epoch"]) + 1,
    )


@dataclass
class RunSession:
    """What a run sets up before its first epoch."""

    parts: TrainingParts
    feature_set: FeatureSet
    splits: dict[str, np.ndarray]
    eval_splits: list[str]
    selection_split: str
    devices: tuple[str, ...]  # recording device per cycle
    data: EpochData
    info: RunInfo
    progress: RunProgress


def set_up_run(
    config: ExperimentConfig,
    *,
    output_dir: Path,
    feature_set: FeatureSet | None,
    resume: bool,
    resume_from: str | os.PathLike[str] | None,
    device: str | None,
    show_progress: bool,
    initial_weights: InitialWeights | None = None,
) -> RunSession:
    """Model, features, splits, the resumed progress and the prepared output folder of a run
    (the model from `initial_weights` when given, see build_training_parts)."""
    train = config.train
    torch_device = resolve_device(device if device is not None else train.device)
    resume_point = locate_resume_checkpoint(
        config, output_dir, resume=resume, resume_from=resume_from
    )
    # The model before the features, so a bad model.checkpoint fails before any feature work.
    parts = build_training_parts(
        config,
        torch_device,
        load_initial_checkpoint=resume_point is None,
        initial_weights=initial_weights,
    )
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
    progress = RunProgress()
    if resume_point is not None:
        progress = _restore_progress(
            resume_point, parts, fingerprint=feature_set.fingerprint, device=torch_device
        )
        drop_later_epochs(output_dir, progress.start_epoch - 1)
        say(f"resuming from {resume_point[0]} (epoch {progress.start_epoch - 1})", show_progress)
    prepare_output_dir(
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
    return RunSession(
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
