"""SpecAugment time and frequency masking of a feature batch, on the batch's own device.

Follows the lab's shared pipeline (raymin0223/patch-mix_contrastive_learning and ICBHI_HADES
`util/augmentation.py`, policy `icbhi_ast_sup`, no time warping): per sample, with probability p,
`num_freq_masks` frequency masks filled with the sample's mean, then `num_time_masks` time masks
filled with the mean of the frequency-masked map. Mask widths and starts come from uniform numbers
given as a tensor (drawn up front for a whole epoch, so a captured training step reads them as an
input and a resumed run replays them), or drawn from an explicit generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lungsrad.config import TrainConfig


@dataclass(frozen=True)
class SpecAugmentPolicy:
    """What one SpecAugment call does (the train.* SpecAugment keys).

    Uniform rows of one batch (`rows` of them, each (batch,)): per time mask its width and start,
    then per frequency mask its width and start, then (only when probability < 1) the draw that
    decides whether the sample is augmented. Version-1 configs (1 + 1 masks, probability 1,
    torchaudio sampling) therefore read exactly the 4 rows they always did.
    """

    time_mask: int = 160  # largest time-mask width in frames (0 disables time masks)
    freq_mask: int = 48  # largest frequency-mask width in mel bins (0 disables them)
    num_time_masks: int = 1
    num_freq_masks: int = 1
    fill: Literal["zero", "mean"] = "zero"
    probability: float = 1.0
    sampling: Literal["reference", "torchaudio"] = "torchaudio"

    @classmethod
    def from_train(cls, train: TrainConfig) -> SpecAugmentPolicy | None:
        """The policy of a train config; None when train.use_specaugment is false."""
        if not train.use_specaugment:
            return None
        return cls(
            time_mask=train.time_mask,
            freq_mask=train.freq_mask,
            num_time_masks=train.num_time_masks,
            num_freq_masks=train.num_freq_masks,
            fill=train.mask_fill,
            probability=train.specaugment_probability,
            sampling=train.mask_sampling,
        )

    @property
    def rows(self) -> int:
        """Uniform rows per batch (see the class docstring)."""
        draws_probability = self.probability < 1.0
        return 2 * (self.num_time_masks + self.num_freq_masks) + int(draws_probability)


def sample_mask_uniforms(
    num_steps: int, batch_size: int, *, policy: SpecAugmentPolicy, generator: torch.Generator
) -> torch.Tensor:
    """(num_steps, policy.rows, batch_size) float32 uniforms in [0, 1) for `num_steps` batches."""
    return torch.rand(num_steps, policy.rows, batch_size, generator=generator)


def _torchaudio_span(
    size: int, max_width: int, width_uniform: torch.Tensor, start_uniform: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchaudio's `mask_along_axis_iid`: width u * max, start u' * (size - width), both ends
    truncated to integers. Kept bit-identical: version-1 runs replay through it."""
    max_width = min(max_width, size)
    width = width_uniform * max_width
    start = start_uniform * (size - width)
    return start.long(), (start + width).long()


def _reference_span(
    size: int, max_width: int, width_uniform: torch.Tensor, start_uniform: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's `int(np.random.uniform(0, max))` width and `random.randint(0, size -
    width)` start: integers, each value equally likely. A width past the axis is cut to it."""
    width = torch.floor(width_uniform * max_width).clamp(max=min(max_width - 1, size))
    # floor(u * n) over the n = size - width + 1 starts; the minimum guards a float32 u * n
    # that rounds up to n.
    start = torch.minimum(torch.floor(start_uniform * (size - width + 1)), size - width)
    return start.long(), (start + width).long()


def _axis_mask(
    policy: SpecAugmentPolicy,
    size: int,
    max_width: int,
    uniforms: torch.Tensor,
) -> torch.Tensor:
    """(batch, size) bool: the union of the masks whose (width, start) rows are `uniforms`.

    Args:
        uniforms: (2 * num_masks, batch): width and start rows of each mask in turn.
    """
    batch = uniforms.shape[1]
    masked = torch.zeros(batch, size, dtype=torch.bool, device=uniforms.device)
    if max_width <= 0:
        return masked
    span = _reference_span if policy.sampling == "reference" else _torchaudio_span
    positions = torch.arange(size, device=uniforms.device)
    for index in range(0, uniforms.shape[0], 2):
        first, end = span(size, max_width, uniforms[index], uniforms[index + 1])
        masked |= (positions >= first[:, None]) & (positions < end[:, None])
    return masked


def mask_layout(
    policy: SpecAugmentPolicy, frames: int, bins: int, uniforms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which frames and bins each sample masks, and whether it is augmented at all.

    Args:
        policy: the SpecAugment settings.
        frames: time frames of the maps.
        bins: mel bins of the maps.
        uniforms: (policy.rows, batch) uniforms in [0, 1).

    Returns:
        time_masked (batch, frames) bool, freq_masked (batch, bins) bool, applied (batch,) bool
        (time_masked and freq_masked are all False where applied is False).
    """
    time_rows = 2 * policy.num_time_masks
    freq_rows = 2 * policy.num_freq_masks
    time_masked = _axis_mask(policy, frames, policy.time_mask, uniforms[:time_rows])
    freq_masked = _axis_mask(
        policy, bins, policy.freq_mask, uniforms[time_rows : time_rows + freq_rows]
    )
    if policy.probability < 1.0:
        applied = uniforms[time_rows + freq_rows] < policy.probability
        time_masked &= applied[:, None]
        freq_masked &= applied[:, None]
    else:
        applied = torch.ones(uniforms.shape[1], dtype=torch.bool, device=uniforms.device)
    return time_masked, freq_masked, applied


def spec_augment(
    features: torch.Tensor,
    *,
    policy: SpecAugmentPolicy,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masks random frequency bands and time spans of each chosen sample.

    fill 'zero': masked cells become 0 (the dataset mean of AudioSet-normalised features).
    fill 'mean': frequency bands become the sample's mean, then time spans the mean of the
    frequency-masked sample, as the reference computes them in turn. Exactly one of `generator`
    and `uniforms` is given; with `uniforms` no host work depends on the values (nothing syncs
    with the device).

    Args:
        features: (batch, frames, mel_bins) float on any device.
        policy: widths, counts, fill, probability and sampling of the masks.
        generator: CPU generator the (policy.rows, batch) uniforms are drawn from.
        uniforms: (policy.rows, >= batch) uniforms on the features' device; the first `batch`
            columns are used.

    Returns:
        (batch, frames, mel_bins), a new tensor; `features` is not modified.
    """
    batch_size, frames, bins = features.shape
    if (generator is None) == (uniforms is None):
        raise ValueError("spec_augment takes exactly one of generator= and uniforms=")
    if generator is not None:
        uniforms = sample_mask_uniforms(1, batch_size, policy=policy, generator=generator)[0]
    assert uniforms is not None and uniforms.shape[0] == policy.rows, "uniforms of another policy"
    uniforms = uniforms[:, :batch_size].to(features.device)
    time_masked, freq_masked, _ = mask_layout(policy, frames, bins, uniforms)
    if policy.fill == "zero":
        masked = time_masked[:, :, None] | freq_masked[:, None, :]
        return features.masked_fill(masked, 0.0)
    before_freq = features.mean(dim=(1, 2), keepdim=True)
    augmented = torch.where(freq_masked[:, None, :], before_freq, features)
    before_time = augmented.mean(dim=(1, 2), keepdim=True)
    return torch.where(time_masked[:, :, None], before_time, augmented)
