"""SpecAugment time and frequency masking of a feature batch, on the batch's own device.

Follows torchaudio's `mask_along_axis_iid` as AST and patch-mix CL use it (one time mask and one
frequency mask per sample, width ~ U[0, max_width), no time warping). The masks are built from
uniform numbers given as a tensor (drawn up front for a whole epoch, so a captured training step
reads them as an input and a resumed run replays them), or drawn from an explicit generator.
"""

from __future__ import annotations

import torch

# Rows of the (4, batch) uniforms of one batch: time width, time start, freq width, freq start.
MASK_UNIFORM_ROWS = 4


def sample_mask_uniforms(
    num_steps: int, batch_size: int, *, generator: torch.Generator
) -> torch.Tensor:
    """(num_steps, 4, batch_size) float32 uniforms in [0, 1) for `num_steps` batches."""
    return torch.rand(num_steps, MASK_UNIFORM_ROWS, batch_size, generator=generator)


def _axis_mask(
    size: int, max_width: int, width_uniform: torch.Tensor, start_uniform: torch.Tensor
) -> torch.Tensor:
    """(batch, size) bool: True inside each sample's masked span [start, start + width)."""
    max_width = min(max_width, size)
    width = width_uniform * max_width
    start = start_uniform * (size - width)
    # torchaudio truncates both ends to integers the same way.
    first = start.long()
    end = (start + width).long()
    positions = torch.arange(size, device=width_uniform.device)
    return (positions >= first[:, None]) & (positions < end[:, None])


def spec_augment(
    features: torch.Tensor,
    *,
    time_mask: int,
    freq_mask: int,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Masks one random time span and one random frequency band per sample.

    Masked cells become 0, the dataset mean of the normalised features. Exactly one of
    `generator` and `uniforms` is given; with `uniforms` no host work depends on the values
    (nothing syncs with the device).

    Args:
        features: (batch, frames, mel_bins) on any device.
        time_mask: largest time-mask width in frames (0 disables it).
        freq_mask: largest frequency-mask width in mel bins (0 disables it).
        generator: CPU generator the (4, batch) uniforms are drawn from.
        uniforms: (4, >= batch) uniforms on the features' device (see MASK_UNIFORM_ROWS); the
            first `batch` columns are used.

    Returns:
        (batch, frames, mel_bins), a new tensor; `features` is not modified.
    """
    batch_size, frames, bins = features.shape
    if (generator is None) == (uniforms is None):
        raise ValueError("spec_augment takes exactly one of generator= and uniforms=")
    if generator is not None:
        uniforms = sample_mask_uniforms(1, batch_size, generator=generator)[0]
    assert uniforms is not None
    uniforms = uniforms[:, :batch_size].to(features.device)
    masked = torch.zeros(batch_size, frames, bins, dtype=torch.bool, device=features.device)
    if time_mask > 0:
        masked |= _axis_mask(frames, time_mask, uniforms[0], uniforms[1])[:, :, None]
    if freq_mask > 0:
        masked |= _axis_mask(bins, freq_mask, uniforms[2], uniforms[3])[:, None, :]
    return features.masked_fill(masked, 0.0)
