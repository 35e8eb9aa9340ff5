"""Device, mixed precision and model assembly shared by training and evaluation."""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lungsrad.config import ExperimentConfig
from lungsrad.errors import UserError
from lungsrad.method.spectral_regularization import attach_spectral_regularization
from lungsrad.metrics import confusion_by_group, confusion_matrix, scores_from_confusion
from lungsrad.models import Backbone, InitialWeights, build_model
from lungsrad.models.selective_scan import resolve_backend
from lungsrad.training.loop import predict

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def cpu_threads(num_threads: int | None) -> Iterator[None]:
    """Runs the block with torch.set_num_threads(num_threads) (None: unchanged), then restores.

    Small models on a busy machine run far faster on one thread than on oversubscribed ones.
    """
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(requested: str) -> torch.device:
    """ "auto" -> the current CUDA device when one is visible, else CPU; "cuda" needs one."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"train.device is '{requested}' but no CUDA device is visible; use 'auto' or 'cpu'"
            )
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise UserError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got '{requested}'")
    return device


def resolve_amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for train.amp on this device (None: full float32).

    AMP runs on CUDA only: "auto" picks bf16 where the GPU supports it, else fp16 (with a
    GradScaler). On CPU any AMP setting is ignored with a warning.
    """
    if amp == "off":
        return None
    if device.type != "cuda":
        if amp != "auto":
            warnings.warn(
                f"train.amp '{amp}' is ignored on {device}: AMP runs on CUDA only", stacklevel=2
            )
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return AMP_DTYPES[amp]


def amp_name(amp_dtype: torch.dtype | None) -> str:
    """'bf16', 'fp16' or 'off'."""
    for name, dtype in AMP_DTYPES.items():
        if dtype == amp_dtype:
            return name
    return "off"


def device_name(device: torch.device) -> str:
    """Human-readable name of the device (GPU model or CPU description)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def scan_backend_name(model: Backbone, device: torch.device) -> str:
    """The selective-scan backend the model's "auto" (or explicit) setting resolves to; "none"
    for a backbone without selective scans (AST)."""
    backend = getattr(model, "scan_backend", None)
    return "none" if backend is None else resolve_backend(backend, device)


def build_classifier(
    config: ExperimentConfig,
    device: torch.device,
    *,
    load_initial_checkpoint: bool = True,
    initial_weights: InitialWeights | None = None,
) -> Backbone:
    """The backbone of `config` on `device`, with spectral regularization attached when enabled.

    Args:
        config: the run config.
        device: where the model lives.
        load_initial_checkpoint: load `model.checkpoint` (skip when weights come from a
            lungsrad checkpoint next, e.g. on resume).
        initial_weights: model.checkpoint's weights already read (build_model's): its file
            is not opened.
    """
    if not load_initial_checkpoint and config.model.checkpoint is not None:
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, checkpoint=None)
        )
        initial_weights = None
    model = build_model(config, initial_weights=initial_weights).to(device)
    attach_spectral_regularization(model, config)
    return model


def evaluate_split_by_device(
    model: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    indices: np.ndarray,
    *,
    devices: tuple[str, ...],
    batch_size: int,
    amp_dtype: torch.dtype | None,
    num_classes: int,
    model_frames: int | None,
) -> tuple[dict[str, float], np.ndarray, dict[str, np.ndarray]]:
    """ICBHI scores (keys: lungsrad.metrics.EVAL_KEYS), the confusion matrix of a split and one
    confusion matrix per recording device, from one prediction pass.

    Args:
        model: the classifier.
        features: (num_cycles, frames, mel_bins) on the model's device.
        labels: (num_cycles,) int64, any device.
        indices: (n,) cycle indices of the split.
        devices: recording device per cycle of the whole feature set (num_cycles,).
        batch_size: evaluation batch size.
        amp_dtype: autocast dtype or None.
        num_classes: classes of the model.
        model_frames: data.model_frames (batches are resized to it, as in training) or None.

    Returns:
        (scores, confusion (num_classes, num_classes) int64, {device: confusion} for the devices
        that have cycles in the split, sorted by name).
    """
    index_array = np.asarray(indices, dtype=np.int64)
    index_tensor = torch.as_tensor(index_array, dtype=torch.int64)
    predictions = predict(
        model,
        features,
        index_tensor.to(features.device),
        batch_size=batch_size,
        amp_dtype=amp_dtype,
        model_frames=model_frames,
    ).numpy()
    truth = labels.detach().cpu().index_select(0, index_tensor).numpy()
    matrix = confusion_matrix(truth, predictions, num_classes)
    split_devices = [devices[i] for i in index_array]
    by_device = confusion_by_group(truth, predictions, split_devices, num_classes)
    return scores_from_confusion(matrix), matrix, by_device
