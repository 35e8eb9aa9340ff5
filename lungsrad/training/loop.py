"""One training epoch and one evaluation pass over in-memory features, plus the per-epoch random
streams and learning-rate schedule that make a resumed run replay an uninterrupted one.

The whole feature set sits as one float16 tensor on the training device; batches are
`index_select`ed from it and cast to float32, so no DataLoader or worker is involved.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lungsrad.config import TrainConfig
from lungsrad.metrics import (
    TRAIN_CE_LOSS,
    TRAIN_FREQ_LOSS,
    TRAIN_LEARNING_RATE,
    TRAIN_LOSS,
    TRAIN_SAMPLES_PER_SECOND,
    TRAIN_TIME_LOSS,
)
from lungsrad.training.specaugment import spec_augment

# Independent random streams of one epoch; each is seeded from (seed, epoch, stream).
STREAM_SHUFFLE = 0
STREAM_SPECAUGMENT = 1
STREAM_PATCH_MIX = 2
STREAM_GLOBAL = 3  # torch's global RNG (drop path and anything else that uses it)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; names the epoch and step."""


def _optimizer_step(step_function: Callable[[], object], epoch: int, step: int) -> None:
    """Runs the optimizer update; an update too large for the parameters' dtype (Adam's
    lr / (1 - beta1) past float32's range) is a diverging run, not a crash."""
    try:
        step_function()
    except RuntimeError as error:
        if "overflow" not in str(error):
            raise
        raise NonFiniteLossError(
            f"optimizer update overflowed at epoch {epoch}, step {step} ({error}); lower "
            "train.learning_rate"
        ) from error


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for one random stream of one epoch, derived from the run seed.

    numpy's SeedSequence hashes the three numbers, so nearby seeds and epochs give unrelated
    streams and the value depends on nothing but its arguments (the key to an exact resume).
    """
    sequence = np.random.SeedSequence([seed % 2**64, epoch, stream])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU torch.Generator for one stream of one epoch."""
    return torch.Generator().manual_seed(stream_seed(seed, epoch, stream))


def learning_rate_factor(epoch_index: int, train: TrainConfig) -> float:
    """Multiplier of train.learning_rate during epoch `epoch_index` (0-based).

    Linear warm-up over `warmup_epochs` ((e + 1) / (warmup + 1), so no epoch runs at lr 0),
    then cosine from 1 towards 0 over the remaining epochs, a step decay, or constant.
    """
    warmup = train.warmup_epochs
    if epoch_index < warmup:
        return (epoch_index + 1) / (warmup + 1)
    progress_epochs = epoch_index - warmup
    if train.schedule == "cosine":
        span = max(train.num_epochs - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * progress_epochs / span))
    if train.schedule == "step":
        return train.step_gamma ** (progress_epochs // train.step_size_epochs)
    return 1.0


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None):
    """torch.autocast for the device when AMP is on, else a no-op context."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@dataclass
class EpochData:
    """Device-resident training data of a run.

    Attributes:
        features: (num_cycles, frames, mel_bins) float16 on the training device.
        labels: (num_cycles,) int64 on the training device.
        train_indices: (num_train,) int64 on the training device.
    """

    features: torch.Tensor
    labels: torch.Tensor
    train_indices: torch.Tensor


def _batches(order: torch.Tensor, batch_size: int, max_steps: int | None) -> Iterator[torch.Tensor]:
    steps = math.ceil(order.shape[0] / batch_size)
    if max_steps is not None:
        steps = min(steps, max_steps)
    for step in range(steps):
        yield order[step * batch_size : (step + 1) * batch_size]


def steps_per_epoch(num_train: int, train: TrainConfig) -> int:
    """Optimiser steps one epoch takes (the last batch may be smaller)."""
    steps = math.ceil(num_train / train.batch_size)
    if train.max_steps_per_epoch is not None:
        steps = min(steps, train.max_steps_per_epoch)
    return steps


def train_one_epoch(
    *,
    model: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_scaler: torch.amp.GradScaler | None,
    data: EpochData,
    train: TrainConfig,
    seed: int,
    epoch: int,
    amp_dtype: torch.dtype | None,
    show_progress: bool,
) -> dict[str, float]:
    """Trains one epoch; every random draw comes from streams seeded by (seed, epoch).

    Args:
        model: the DASS (spectral regularization hooks already attached).
        objective: PatchMixObjective (owns the projection head; mode "none" is plain CE).
        optimizer: Adam over model and objective parameters, lr already set for this epoch.
        grad_scaler: GradScaler for fp16 AMP, else None.
        data: device-resident features, labels, train indices.
        train: the train config section.
        seed: the run seed.
        epoch: 1-based epoch number.
        amp_dtype: autocast dtype (CUDA only) or None.
        show_progress: show a tqdm bar.

    Returns:
        train/loss, train/ce_loss, train/time_mix_loss, train/freq_mix_loss (sample-weighted
        means), train/learning_rate and train/samples_per_second.

    Raises:
        NonFiniteLossError: the loss of a step is NaN or infinite (before that step's update).
    """
    device = data.features.device
    torch.manual_seed(stream_seed(seed, epoch, STREAM_GLOBAL))
    shuffle = epoch_generator(seed, epoch, STREAM_SHUFFLE)
    masking = epoch_generator(seed, epoch, STREAM_SPECAUGMENT)
    mixing = epoch_generator(seed, epoch, STREAM_PATCH_MIX)
    permutation = torch.randperm(data.train_indices.shape[0], generator=shuffle)
    order = data.train_indices.index_select(0, permutation.to(device))
    total_steps = steps_per_epoch(order.shape[0], train)
    learning_rate = optimizer.param_groups[0]["lr"]
    parameters = [p for group in optimizer.param_groups for p in group["params"]]

    model.train()
    objective.train()
    sums = torch.zeros(4, dtype=torch.float64)
    num_samples = 0
    started = time.perf_counter()
    bar = tqdm(
        total=total_steps,
        desc=f"epoch {epoch}/{train.num_epochs}",
        # None: shown on a terminal only, so a log or an error line on stderr stays clean.
        disable=None if show_progress else True,
        leave=False,
        dynamic_ncols=True,
    )
    with bar:
        for step, batch_indices in enumerate(_batches(order, train.batch_size, total_steps), 1):
            x = data.features.index_select(0, batch_indices).float()
            y = data.labels.index_select(0, batch_indices)
            if train.use_specaugment:
                x = spec_augment(
                    x, time_mask=train.time_mask, freq_mask=train.freq_mask, generator=masking
                )
            with autocast_context(device, amp_dtype):
                loss, _, parts = objective(model, x, y, generator=mixing)
            values = torch.stack(
                [
                    loss.detach().float(),
                    parts["ce"].float(),
                    parts["time_mix"].float(),
                    parts["freq_mix"].float(),
                ]
            ).cpu()
            if not bool(torch.isfinite(values).all()):
                raise NonFiniteLossError(
                    f"training loss is not finite at epoch {epoch}, step {step} "
                    f"(loss {values[0].item()}, ce {values[1].item()}, time_mix "
                    f"{values[2].item()}, freq_mix {values[3].item()}); lower "
                    "train.learning_rate, set train.grad_clip_norm, or check the features"
                )
            optimizer.zero_grad(set_to_none=True)
            if grad_scaler is not None:
                grad_scaler.scale(loss).backward()
                if train.grad_clip_norm is not None:
                    grad_scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(parameters, train.grad_clip_norm)
                _optimizer_step(lambda: grad_scaler.step(optimizer), epoch, step)
                grad_scaler.update()
            else:
                loss.backward()
                if train.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(parameters, train.grad_clip_norm)
                _optimizer_step(optimizer.step, epoch, step)
            batch_size = int(batch_indices.shape[0])
            sums += values.double() * batch_size
            num_samples += batch_size
            bar.update(1)
            if show_progress:
                bar.set_postfix(loss=f"{values[0].item():.4f}", refresh=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    means = (sums / max(num_samples, 1)).tolist()
    return {
        TRAIN_LOSS: means[0],
        TRAIN_CE_LOSS: means[1],
        TRAIN_TIME_LOSS: means[2],
        TRAIN_FREQ_LOSS: means[3],
        TRAIN_LEARNING_RATE: float(learning_rate),
        TRAIN_SAMPLES_PER_SECOND: num_samples / seconds if seconds > 0 else math.nan,
    }


@torch.no_grad()
def predict(
    model: nn.Module,
    features: torch.Tensor,
    indices: torch.Tensor,
    *,
    batch_size: int,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Class predictions of the chosen cycles.

    Args:
        model: the classifier (put in eval mode here).
        features: (num_cycles, frames, mel_bins) on the model's device, any float dtype.
        indices: (n,) int64 cycle indices on the same device.
        batch_size: evaluation batch size.
        amp_dtype: autocast dtype or None.

    Returns:
        (n,) int64 predictions on the CPU.
    """
    model.eval()
    device = features.device
    predictions = []
    for start in range(0, indices.shape[0], batch_size):
        x = features.index_select(0, indices[start : start + batch_size]).float()
        with autocast_context(device, amp_dtype):
            logits = model(x)
        predictions.append(logits.float().argmax(dim=1).cpu())
    if not predictions:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat(predictions)
