"""One training epoch (`train_one_epoch`, driving the run's `TrainStep`) and one evaluation pass
over in-memory features, plus the per-epoch random streams that make a resumed run replay an
uninterrupted one.

The whole feature set sits as one float16 tensor on the training device; batches are
`index_select`ed from it and cast to float32, so no DataLoader or worker is involved. Nothing in
an epoch waits for the device: random numbers are drawn per epoch up front, and losses and the
NaN/inf flag stay on the device until the host looks at them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lungsrad.config import TrainConfig
from lungsrad.data.features import resize_frames
from lungsrad.errors import UserError
from lungsrad.method.patch_mix import MixKind, sample_mix_draws
from lungsrad.metrics import (
    TRAIN_CAPTURE_SECONDS,
    TRAIN_CE_LOSS,
    TRAIN_FREQ_LOSS,
    TRAIN_LEARNING_RATE,
    TRAIN_LOSS,
    TRAIN_SAMPLES_PER_SECOND,
    TRAIN_TIME_LOSS,
)
from lungsrad.training.specaugment import SpecAugmentPolicy, sample_mask_uniforms
from lungsrad.training.train_step import (
    EpochData,
    NonFiniteLossError,
    TrainStep,
    autocast_context,
)

# Independent random streams of one epoch; each is seeded from (seed, epoch, stream).
STREAM_SHUFFLE = 0
STREAM_SPECAUGMENT = 1
STREAM_PATCH_MIX = 2
STREAM_GLOBAL = 3  # torch's global RNG (drop path and anything else that uses it)


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


def _batches(order: torch.Tensor, batch_size: int, steps: int) -> Iterator[torch.Tensor]:
    for step in range(steps):
        yield order[step * batch_size : (step + 1) * batch_size]


def steps_per_epoch(num_train: int, train: TrainConfig) -> int:
    """Optimiser steps one epoch takes: the last batch may be smaller, or with train.drop_last
    it is dropped when it is not full (the reference's DataLoader(drop_last=True))."""
    if train.drop_last:
        steps = num_train // train.batch_size
    else:
        steps = math.ceil(num_train / train.batch_size)
    if train.max_steps_per_epoch is not None:
        steps = min(steps, train.max_steps_per_epoch)
    return steps


def draw_epoch_randomness(
    *,
    seed: int,
    epoch: int,
    num_steps: int,
    batch_size: int,
    specaugment: SpecAugmentPolicy | None,
    mixes: tuple[MixKind, ...],
    alpha: float,
    cells: int,
    device: torch.device,
) -> torch.Tensor:
    """Every per-step random number of one epoch (SpecAugment masks, patch-mix lambdas,
    partners and positions), drawn up front and moved to the device in one copy.

    Row s holds step s's numbers: specaugment.rows * batch_size SpecAugment uniforms (none
    without SpecAugment), then the packed MixDraws (see `TrainStep.split_row`). Drawn on the CPU
    from the epoch's streams, so CPU and CUDA runs and resumed runs see the same numbers, and
    the mask count changes no other stream. Drop path draws from torch's global RNG on the device.

    Returns:
        (num_steps, width) float32 on `device`.
    """
    columns = []
    if specaugment is not None:
        masks = sample_mask_uniforms(
            num_steps,
            batch_size,
            policy=specaugment,
            generator=epoch_generator(seed, epoch, STREAM_SPECAUGMENT),
        )
        columns.append(masks.flatten(1))
    columns.append(
        sample_mix_draws(
            mixes,
            alpha=alpha,
            num_steps=num_steps,
            batch_size=batch_size,
            cells=cells,
            generator=epoch_generator(seed, epoch, STREAM_PATCH_MIX),
        )
    )
    return torch.cat(columns, dim=1).to(device)


class EpochTotals:
    """Sample-weighted loss sums of an epoch and its first non-finite step, kept on the device
    so that no step waits for the host; `raise_if_not_finite` is the one place that reads them.
    """

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_values = torch.zeros(4, device=device)
        self.num_samples = 0

    def add(self, values: torch.Tensor, batch_size: int) -> None:
        """values: (4,) float32 loss, ce, time_mix, freq_mix of one step."""
        self.step += 1
        self.sums += values.double() * batch_size
        first_bad = (self.first_bad_step < 0) & ~torch.isfinite(values).all()
        self.first_bad_step = torch.where(first_bad, self.step, self.first_bad_step)
        self.bad_values = torch.where(first_bad, values, self.bad_values)
        self.num_samples += batch_size

    def raise_if_not_finite(self, epoch: int) -> None:
        """NonFiniteLossError naming the first step whose loss was NaN/inf (syncs the device)."""
        step = int(self.first_bad_step)
        if step < 0:
            return
        loss, ce, time_mix, freq_mix = self.bad_values.tolist()
        raise NonFiniteLossError(
            f"training loss is not finite at epoch {epoch}, step {step} (loss {loss}, ce {ce}, "
            f"time_mix {time_mix}, freq_mix {freq_mix}); lower train.learning_rate, set "
            "train.grad_clip_norm, or check the features"
        )

    def means(self) -> list[float]:
        return (self.sums / max(self.num_samples, 1)).tolist()


def _plan_epoch(
    step_function: TrainStep, data: EpochData, train: TrainConfig, *, seed: int, epoch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeds torch's global RNG for the epoch; returns the shuffled training order (device
    indices) and the epoch's `draw_epoch_randomness` rows, one per step."""
    device = data.features.device
    torch.manual_seed(stream_seed(seed, epoch, STREAM_GLOBAL))
    shuffle = epoch_generator(seed, epoch, STREAM_SHUFFLE)
    permutation = torch.randperm(data.train_indices.shape[0], generator=shuffle)
    order = data.train_indices.index_select(0, permutation.to(device))
    total_steps = steps_per_epoch(order.shape[0], train)
    if total_steps == 0:
        raise UserError(
            f"train.drop_last drops every batch: {order.shape[0]} training cycles are fewer "
            f"than train.batch_size ({train.batch_size}); lower the batch size or set "
            "train.drop_last to false"
        )
    objective = step_function.objective
    randomness = draw_epoch_randomness(
        seed=seed,
        epoch=epoch,
        num_steps=total_steps,
        batch_size=train.batch_size,
        specaugment=step_function.specaugment,
        mixes=objective.mixes,
        alpha=objective.config.alpha,
        cells=step_function.cells,
        device=device,
    )
    return order, randomness


def train_one_epoch(
    *,
    step_function: TrainStep,
    data: EpochData,
    train: TrainConfig,
    seed: int,
    epoch: int,
    show_progress: bool,
) -> dict[str, float]:
    """Trains one epoch; every random draw comes from streams seeded by (seed, epoch).

    No step waits for the device: losses are summed and checked for NaN/inf on the device, and
    the host looks at them every `train.finite_check_steps` steps and at the end of the epoch.

    Args:
        step_function: the run's TrainStep (model, objective, optimizer with this epoch's lr).
        data: device-resident features, labels, train indices.
        train: the train config section.
        seed: the run seed.
        epoch: 1-based epoch number.
        show_progress: show a tqdm bar (its loss is refreshed at each host look).

    Returns:
        train/loss, train/ce_loss, train/time_mix_loss, train/freq_mix_loss (sample-weighted
        means), train/learning_rate and train/samples_per_second (+ train/capture_seconds
        with train.capture_step).

    Raises:
        NonFiniteLossError: the loss of a step was NaN or infinite (named by epoch and step;
            raised at the next host look, so later steps of the interval have run).
    """
    device = data.features.device
    model, objective = step_function.model, step_function.objective
    order, randomness = _plan_epoch(step_function, data, train, seed=seed, epoch=epoch)
    total_steps = randomness.shape[0]
    learning_rate = float(step_function.optimizer.param_groups[0]["lr"])
    capture_seconds = step_function.capture_seconds

    model.train()
    objective.train()
    totals = EpochTotals(device)
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
            values = step_function(batch_indices, randomness[step - 1], epoch=epoch, step=step)
            totals.add(values, int(batch_indices.shape[0]))
            bar.update(1)
            if train.finite_check_steps and step % train.finite_check_steps == 0:
                totals.raise_if_not_finite(epoch)
                if show_progress:
                    bar.set_postfix(loss=f"{totals.means()[0]:.4f}", refresh=False)
        totals.raise_if_not_finite(epoch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    means = totals.means()
    metrics = {
        TRAIN_LOSS: means[0],
        TRAIN_CE_LOSS: means[1],
        TRAIN_TIME_LOSS: means[2],
        TRAIN_FREQ_LOSS: means[3],
        TRAIN_LEARNING_RATE: learning_rate,
        TRAIN_SAMPLES_PER_SECOND: totals.num_samples / seconds if seconds > 0 else math.nan,
    }
    if step_function.capture:
        metrics[TRAIN_CAPTURE_SECONDS] = step_function.capture_seconds - capture_seconds
    return metrics


@torch.no_grad()
def predict(
    model: nn.Module,
    features: torch.Tensor,
    indices: torch.Tensor,
    *,
    batch_size: int,
    amp_dtype: torch.dtype | None,
    model_frames: int | None = None,
) -> torch.Tensor:
    """Class predictions of the chosen cycles.

    Args:
        model: the classifier (put in eval mode here).
        features: (num_cycles, frames, mel_bins) on the model's device, any float dtype.
        indices: (n,) int64 cycle indices on the same device.
        batch_size: evaluation batch size.
        amp_dtype: autocast dtype or None.
        model_frames: data.model_frames: each batch is resized to it on the device, as in
            training (None: the features' own frames).

    Returns:
        (n,) int64 predictions on the CPU.
    """
    model.eval()
    device = features.device
    predictions = []
    for start in range(0, indices.shape[0], batch_size):
        x = features.index_select(0, indices[start : start + batch_size]).float()
        x = resize_frames(x, model_frames)
        with autocast_context(device, amp_dtype):
            logits = model(x)
        predictions.append(logits.argmax(dim=1))
    if not predictions:
        return torch.zeros(0, dtype=torch.int64)
    # One copy to the host at the end: no batch waits for the previous one.
    return torch.cat(predictions).cpu()
