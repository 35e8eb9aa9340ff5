"""SpecAugment masking: one consecutive span per axis and sample, bounded widths, reproducible."""

from __future__ import annotations

import torch

from lungsrad.training.specaugment import spec_augment


def _masked(original: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
    return (augmented == 0) & (original != 0)


def test_each_sample_gets_one_time_span_and_one_frequency_band():
    features = torch.rand(32, 100, 40) + 1.0  # never 0, so masked cells are exactly the zeros
    augmented = spec_augment(
        features, time_mask=30, freq_mask=12, generator=torch.Generator().manual_seed(0)
    )
    masked = _masked(features, augmented)
    for sample in range(features.shape[0]):
        # A masked time frame is masked over every bin (and a masked bin over every frame).
        frames = masked[sample].all(dim=1).nonzero().flatten()
        bins = masked[sample].all(dim=0).nonzero().flatten()
        expected = torch.zeros(100, 40, dtype=torch.bool)
        expected[frames] = True
        expected[:, bins] = True
        assert torch.equal(masked[sample], expected)
        for span, limit in ((frames, 30), (bins, 12)):
            assert span.numel() <= limit  # torchaudio truncates both ends: at most max_width
            if span.numel():
                assert torch.equal(span, torch.arange(span[0], span[0] + span.numel()))
    assert masked.any(dim=(1, 2)).float().mean() > 0.8  # widths ~ U[0, max) are mostly > 0


def test_same_generator_seed_gives_the_same_masks_and_input_is_untouched():
    features = torch.rand(8, 50, 20) + 1.0
    before = features.clone()
    first = spec_augment(
        features, time_mask=20, freq_mask=8, generator=torch.Generator().manual_seed(5)
    )
    second = spec_augment(
        features, time_mask=20, freq_mask=8, generator=torch.Generator().manual_seed(5)
    )
    third = spec_augment(
        features, time_mask=20, freq_mask=8, generator=torch.Generator().manual_seed(6)
    )
    assert torch.equal(first, second)
    assert not torch.equal(first, third)
    assert torch.equal(features, before)


def test_zero_widths_and_masks_wider_than_the_axis():
    features = torch.rand(4, 10, 6) + 1.0
    unchanged = spec_augment(features, time_mask=0, freq_mask=0, generator=torch.Generator())
    assert torch.equal(unchanged, features)
    wide = spec_augment(
        features, time_mask=500, freq_mask=500, generator=torch.Generator().manual_seed(1)
    )
    assert wide.shape == features.shape and torch.isfinite(wide).all()
