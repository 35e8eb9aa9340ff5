"""One training epoch (`TrainStep`, eager or captured as a CUDA graph) and one evaluation pass
over in-memory features, plus the per-epoch random streams and learning-rate schedule that make a
resumed run replay an uninterrupted one.

The whole feature set sits as one float16 tensor on the training device; batches are
`index_select`ed from it and cast to float32, so no DataLoader or worker is involved. Nothing in
a step waits for the device: random numbers are drawn per epoch up front, and losses and the
NaN/inf flag stay on the device until the host looks at them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lungsrad.config import TrainConfig
from lungsrad.data.features import resize_frames
from lungsrad.errors import UserError
from lungsrad.method.patch_mix import (
    MixDraw,
    MixKind,
    PatchMixObjective,
    sample_mix_draws,
    unpack_mix_draws,
)
from lungsrad.metrics import (
    TRAIN_CAPTURE_SECONDS,
    TRAIN_CE_LOSS,
    TRAIN_FREQ_LOSS,
    TRAIN_LEARNING_RATE,
    TRAIN_LOSS,
    TRAIN_SAMPLES_PER_SECOND,
    TRAIN_TIME_LOSS,
)
from lungsrad.training.optimization import WeightAveraging
from lungsrad.training.specaugment import SpecAugmentPolicy, sample_mask_uniforms, spec_augment

if TYPE_CHECKING:
    from lungsrad.models import Backbone

# Independent random streams of one epoch; each is seeded from (seed, epoch, stream).
STREAM_SHUFFLE = 0
STREAM_SPECAUGMENT = 1
STREAM_PATCH_MIX = 2
STREAM_GLOBAL = 3  # torch's global RNG (drop path and anything else that uses it)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; names the epoch and step."""


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


def autocast_context(
    device: torch.device, amp_dtype: torch.dtype | None, *, cache_enabled: bool = True
):
    """torch.autocast for the device when AMP is on, else a no-op context.

    `cache_enabled=False` for a step being captured into a CUDA graph (torch's rule: cast weights
    cached across the capture boundary would be freed under the graph).
    """
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype, cache_enabled=cache_enabled)


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


@torch.no_grad()
def _embedding_cells(model: Backbone, features: torch.Tensor) -> int:
    """H * W of the model's patch-embedding map for one feature sample (ast_style's grid)."""
    embedding = model.embed(features[:1].float())
    return int(embedding.shape[2] * embedding.shape[3])


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


class TrainStep:
    """One optimiser step of the method on a batch given by device indices; nothing in it waits
    for the device (fp16's GradScaler aside), so the host runs ahead and queues the next step.

    With `capture=True` (CUDA only) the step of a full batch is captured once as a CUDA graph,
    after WARMUP_STEPS eager steps, and replayed from then on; its inputs (batch indices and the
    step's random numbers) are copied into static buffers first. A smaller batch (the last of
    an epoch) runs eagerly. Captured and eager steps compute the same kernels on the same
    numbers; `capture_seconds` is the time spent capturing.
    """

    WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graph asks

    def __init__(
        self,
        *,
        model: Backbone,
        objective: PatchMixObjective,
        optimizer: torch.optim.Optimizer,
        grad_scaler: torch.amp.GradScaler | None,
        data: EpochData,
        train: TrainConfig,
        amp_dtype: torch.dtype | None,
        model_frames: int | None = None,
        capture: bool = False,
    ) -> None:
        self.model = model
        self.objective = objective
        self.optimizer = optimizer
        self.grad_scaler = grad_scaler
        self.data = data
        self.train = train
        self.amp_dtype = amp_dtype
        self.device = data.features.device
        self.specaugment = SpecAugmentPolicy.from_train(train)
        self.model_frames = model_frames
        self.cells = (
            _embedding_cells(model, resize_frames(data.features[:1], model_frames))
            if "ast_style" in objective.mixes
            else 0
        )
        # After the restore of a resumed run: the averaging holds the model's own tensors.
        self.averaging = (
            WeightAveraging(model, train.weight_averaging)
            if train.weight_averaging is not None
            else None
        )
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.capture = capture
        if capture:
            check_capture(self.device, amp_dtype)
            assert grad_scaler is None
            assert all(
                group["capturable"] and isinstance(group["lr"], torch.Tensor)
                for group in optimizer.param_groups
            ), "a captured step needs conform_optimizer(capturable=True) first"
        self.capture_seconds = 0.0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._warmup_left = self.WARMUP_STEPS

    def split_row(
        self, row: torch.Tensor, batch_size: int
    ) -> tuple[torch.Tensor, tuple[MixDraw, ...]]:
        """Views of one `draw_epoch_randomness` row: (rows, batch) mask uniforms (rows 0 without
        SpecAugment) and the MixDraws."""
        rows = self.specaugment.rows if self.specaugment is not None else 0
        masks = row[: rows * batch_size].view(rows, batch_size)
        draws = unpack_mix_draws(
            row[rows * batch_size :], self.objective.mixes, batch_size=batch_size, cells=self.cells
        )
        return masks, draws

    def _compute(
        self, batch_indices: torch.Tensor, row: torch.Tensor, *, epoch: int, step: int
    ) -> torch.Tensor:
        """Forward, backward and update, gradients already cleared; (4,) float32 losses."""
        train = self.train
        masks, draws = self.split_row(row, train.batch_size)
        if self.averaging is not None:
            # Before the forward, as the reference deep-copies its state_dict (BatchNorm
            # statistics the forward updates are averaged too).
            self.averaging.snapshot()
        x = self.data.features.index_select(0, batch_indices).float()
        y = self.data.labels.index_select(0, batch_indices)
        if self.specaugment is not None:
            x = spec_augment(x, policy=self.specaugment, uniforms=masks)
        # The reference resizes after augmentation (torchvision Resize after SpecAugment).
        x = resize_frames(x, self.model_frames)
        capturing = (
            torch.cuda.is_current_stream_capturing() if self.device.type == "cuda" else False
        )
        with autocast_context(self.device, self.amp_dtype, cache_enabled=not capturing):
            loss, _, parts = self.objective(self.model, x, y, draws=draws)
        values = torch.stack(
            [
                loss.detach().float(),
                parts["ce"].float(),
                parts["time_mix"].float(),
                parts["freq_mix"].float(),
            ]
        )
        scaler = self.grad_scaler
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if train.grad_clip_norm is not None:
            if scaler is not None:
                scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, train.grad_clip_norm)
        try:
            if scaler is not None:
                scaler.step(self.optimizer)
                scaler.update()
            else:
                self.optimizer.step()
            if self.averaging is not None:
                self.averaging.blend()
        except RuntimeError as error:
            # An update too large for the parameters' dtype (Adam's lr / (1 - beta1) past
            # float32's range) is a diverging run, not a crash.
            if "overflow" not in str(error):
                raise
            raise NonFiniteLossError(
                f"optimizer update overflowed at epoch {epoch}, step {step} ({error}); lower "
                "train.learning_rate"
            ) from error
        return values

    def _eager(
        self, batch_indices: torch.Tensor, row: torch.Tensor, *, epoch: int, step: int
    ) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        return self._compute(batch_indices, row, epoch=epoch, step=step)

    def __call__(
        self, batch_indices: torch.Tensor, row: torch.Tensor, *, epoch: int, step: int
    ) -> torch.Tensor:
        """Trains on one batch.

        Args:
            batch_indices: (b,) int64 cycle indices on the device, b <= train.batch_size.
            row: (width,) this step's row of `draw_epoch_randomness`, on the device.
            epoch: 1-based epoch (for error messages).
            step: 1-based step within the epoch (for error messages).

        Returns:
            (4,) float32 on the device: loss, ce, time_mix, freq_mix. A captured step returns
            the same buffer every time: consume it before the next call.
        """
        if not self.capture or batch_indices.shape[0] != self.train.batch_size:
            return self._eager(batch_indices, row, epoch=epoch, step=step)
        if self._graph is None and self._warmup_left > 0:
            self._warmup_left -= 1
            return self._warmup(batch_indices, row, epoch=epoch, step=step)
        if self._graph is None:
            self._capture(batch_indices, row, epoch=epoch, step=step)
        assert self._graph is not None and self._static is not None
        static_indices, static_row, static_values = self._static
        static_indices.copy_(batch_indices)
        static_row.copy_(row)
        self._graph.replay()
        return static_values

    def _warmup(
        self, batch_indices: torch.Tensor, row: torch.Tensor, *, epoch: int, step: int
    ) -> torch.Tensor:
        # Lazy initialisation (cuBLAS workspaces, autograd's stream bookkeeping, optimizer
        # state) must happen outside the capture, on a side stream (torch.cuda.graph's docs).
        side = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            values = self._eager(batch_indices, row, epoch=epoch, step=step)
        main.wait_stream(side)
        values.record_stream(main)
        return values

    def _capture(
        self, batch_indices: torch.Tensor, row: torch.Tensor, *, epoch: int, step: int
    ) -> None:
        started = time.perf_counter()
        torch.cuda.synchronize(self.device)
        static_indices = batch_indices.clone()
        static_row = row.clone()
        # Gradients are then allocated by the captured backward, in the graph's memory pool,
        # and every replay writes them afresh.
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_values = self._compute(static_indices, static_row, epoch=epoch, step=step)
        torch.cuda.synchronize(self.device)
        self._graph = graph
        self._static = (static_indices, static_row, static_values)
        self.capture_seconds += time.perf_counter() - started


def check_capture(device: torch.device, amp_dtype: torch.dtype | None) -> None:
    """UserError naming train.capture_step when the training step cannot be captured here."""
    if device.type != "cuda":
        raise UserError(
            f"train.capture_step needs a CUDA device but the run trains on {device}; set "
            "train.capture_step to false"
        )
    if amp_dtype == torch.float16:
        raise UserError(
            "train.capture_step cannot capture fp16 training (its GradScaler reads the "
            "overflow flag on the host every step); set train.amp to bf16 or off, or "
            "train.capture_step to false"
        )


def conform_optimizer(
    optimizer: torch.optim.Optimizer, *, capturable: bool, device: torch.device
) -> None:
    """Puts an Adam's settings (fresh or loaded from a checkpoint of either kind) in the form the
    step needs: for a captured step capturable=True, lr a device tensor the scheduler updates
    in place, step counts on the device; for the eager step a float lr and counts on the CPU."""
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=device) if capturable else lr
        group["capturable"] = capturable
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            if "step" in state:
                where = parameter.device if capturable else torch.device("cpu")
                state["step"] = state["step"].to(device=where, dtype=torch.float32)


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
