"""`TrainStep`: one optimiser step of the method on a batch of device-resident features, eager or
captured as a CUDA graph, and what it needs: the run's `EpochData`, autocast, and an optimiser
conformed to the step (capturable or not).

Nothing in a step waits for the device: its random numbers come drawn per epoch up front (see
lungsrad/training/loop.py), and its losses and the NaN/inf flag stay on the device.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lungsrad.config import TrainConfig
from lungsrad.data.features import resize_frames
from lungsrad.errors import UserError
from lungsrad.method.patch_mix import MixDraw, PatchMixObjective, unpack_mix_draws
from lungsrad.training.optimization import WeightAveraging
from lungsrad.training.specaugment import SpecAugmentPolicy, spec_augment

if TYPE_CHECKING:
    from lungsrad.models import Backbone


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; names the epoch and step."""


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


@torch.no_grad()
def _embedding_cells(model: Backbone, features: torch.Tensor) -> int:
    """H * W of the model's patch-embedding map for one feature sample (ast_style's grid)."""
    embedding = model.embed(features[:1].float())
    return int(embedding.shape[2] * embedding.shape[3])


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
