"""SpecAugment time and frequency masking of a feature batch, on the batch's own device.

Follows torchaudio's `mask_along_axis_iid` as AST and patch-mix CL use it (one time mask and one
frequency mask per sample, width ~ U[0, max_width), no time warping); the random draws come from
an explicit CPU `torch.Generator` so a run (and a resumed run) replays the same masks.
"""

from __future__ import annotations

import torch


def _axis_mask(
    batch_size: int,
    size: int,
    max_width: int,
    *,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """(batch, size) bool: True inside each sample's masked span [start, start + width)."""
    max_width = min(max_width, size)
    width = torch.rand(batch_size, generator=generator) * max_width
    start = torch.rand(batch_size, generator=generator) * (size - width)
    # torchaudio truncates both ends to integers the same way.
    first = start.long().to(device)
    end = (start + width).long().to(device)
    positions = torch.arange(size, device=device)
    return (positions >= first[:, None]) & (positions < end[:, None])


def spec_augment(
    features: torch.Tensor,
    *,
    time_mask: int,
    freq_mask: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Masks one random time span and one random frequency band per sample.

    Masked cells become 0, the dataset mean of the normalised features.

    Args:
        features: (batch, frames, mel_bins) on any device.
        time_mask: largest time-mask width in frames (0 disables it).
        freq_mask: largest frequency-mask width in mel bins (0 disables it).
        generator: CPU generator for the mask positions and widths.

    Returns:
        (batch, frames, mel_bins), a new tensor; `features` is not modified.
    """
    batch_size, frames, bins = features.shape
    device = features.device
    masked = torch.zeros(batch_size, frames, bins, dtype=torch.bool, device=device)
    if time_mask > 0:
        spans = _axis_mask(batch_size, frames, time_mask, generator=generator, device=device)
        masked |= spans[:, :, None]
    if freq_mask > 0:
        bands = _axis_mask(batch_size, bins, freq_mask, generator=generator, device=device)
        masked |= bands[:, None, :]
    return features.masked_fill(masked, 0.0)
