"""The optimiser, its per-epoch learning-rate schedule and the per-step weight averaging of a run.

Follows the lab's shared pipeline (ICBHI_HADES and raymin0223/patch-mix_contrastive_learning
`util/misc.py`: `set_optimizer`, `adjust_learning_rate`, `update_moving_average`; main.py's
`--ma_update` step).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from lungsrad.config import TrainConfig


def build_optimizer(
    parameters: Iterable[nn.Parameter], train: TrainConfig, *, capturable: bool
) -> torch.optim.Optimizer:
    """train.optimizer over `parameters`: 'adam' is torch.optim.Adam (weight_decay is an L2 term
    added to the gradient), 'adamw' torch.optim.AdamW (decoupled decay, the reference's: its
    `--optimizer adam` flag builds `optim.AdamW`, util/misc.py `set_optimizer`)."""
    kind = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return kind(
        list(parameters),
        lr=train.learning_rate,
        weight_decay=train.weight_decay,
        capturable=capturable,
    )


def learning_rate_factor(epoch_index: int, train: TrainConfig) -> float:
    """Multiplier of train.learning_rate during epoch `epoch_index` (0-based).

    Linear warm-up over `warmup_epochs` ((e + 1) / (warmup + 1), so no epoch runs at lr 0),
    then over the remaining span of S epochs (k = 0-based index after the warm-up):
    - cosine: f + (1 - f) (1 + cos(pi k / S)) / 2, the first epoch at the peak;
    - cosine_from_epoch_1: f + (1 - f) (1 + cos(pi (k + 1) / S)) / 2, the reference's counting
      (`adjust_learning_rate` with epochs 1..E), the last epoch at the floor;
    - step: step_gamma ** (k // step_size_epochs); constant: 1.
    f is train.min_learning_rate_factor (the reference: lr_decay_rate ** 3 = 1e-3).
    """
    warmup = train.warmup_epochs
    if epoch_index < warmup:
        return (epoch_index + 1) / (warmup + 1)
    progress_epochs = epoch_index - warmup
    if train.schedule in ("cosine", "cosine_from_epoch_1"):
        span = max(train.num_epochs - warmup, 1)
        if train.schedule == "cosine_from_epoch_1":
            progress_epochs += 1
        floor = train.min_learning_rate_factor
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress_epochs / span))
    if train.schedule == "step":
        return train.step_gamma ** (progress_epochs // train.step_size_epochs)
    return 1.0


class WeightAveraging:
    """The reference's `--ma_update --ma_beta`: after every optimiser step each state entry of the
    model (parameters and buffers) becomes beta * (its value before the step) + (1 - beta) * (its
    value after it).

    `snapshot()` copies the state into persistent buffers and `blend()` lerps back, as
    `torch._foreach_*` kernels on the model's device, so the pair runs inside a captured CUDA
    graph and never waits for the host. "Before the step" is before the forward pass, as the
    reference deep-copies the state_dict at the top of its loop (BatchNorm running statistics
    updated by the forward are averaged too). Integer buffers (BatchNorm's num_batches_tracked)
    get the reference's value too: the blend cast back to the integer type by truncation, as its
    `load_state_dict` does. The optimiser state is untouched.
    """

    def __init__(self, model: nn.Module, beta: float) -> None:
        if not 0.0 < beta < 1.0:
            raise ValueError(f"weight averaging beta must be in (0, 1), got {beta}")
        self.beta = float(beta)
        seen: set[tuple[int, tuple[int, ...]]] = set()
        self.tensors: list[torch.Tensor] = []
        self.integer_tensors: list[torch.Tensor] = []
        for tensor in model.state_dict(keep_vars=True).values():
            key = (tensor.data_ptr(), tuple(tensor.shape))
            if key in seen:  # a tied weight is averaged once
                continue
            seen.add(key)
            if tensor.is_floating_point():
                self.tensors.append(tensor.data)
            elif tensor.dtype != torch.bool:
                self.integer_tensors.append(tensor.data)
        self.snapshots = [torch.empty_like(tensor) for tensor in self.tensors]
        self.integer_snapshots = [torch.empty_like(tensor) for tensor in self.integer_tensors]

    @torch.no_grad()
    def snapshot(self) -> None:
        """Remembers the current state (call before the forward pass of a step)."""
        if self.tensors:
            torch._foreach_copy_(self.snapshots, self.tensors)
        for snapshot, tensor in zip(self.integer_snapshots, self.integer_tensors, strict=True):
            snapshot.copy_(tensor)

    @torch.no_grad()
    def blend(self) -> None:
        """state <- beta * snapshot + (1 - beta) * state (call after optimizer.step())."""
        if self.tensors:
            torch._foreach_lerp_(self.tensors, self.snapshots, self.beta)
        for snapshot, tensor in zip(self.integer_snapshots, self.integer_tensors, strict=True):
            blended = self.beta * snapshot.double() + (1.0 - self.beta) * tensor.double()
            tensor.copy_(blended)  # truncates towards zero, as the reference's load_state_dict
