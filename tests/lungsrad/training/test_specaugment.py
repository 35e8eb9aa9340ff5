"""SpecAugment masking: the reference's distribution (ICBHI_HADES util/augmentation.py, policy
icbhi_ast_sup) computed independently, the two-stage mean fill, and version-1 replay."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lungsrad.config import REFERENCE_SPECAUGMENT_PROBABILITY, config_from_dict
from lungsrad.training.specaugment import (
    SpecAugmentPolicy,
    mask_layout,
    sample_mask_uniforms,
    spec_augment,
)

VERSION_1 = SpecAugmentPolicy(time_mask=30, freq_mask=12)  # 1 + 1 masks, zero, p 1, torchaudio
REFERENCE = SpecAugmentPolicy(
    time_mask=160,
    freq_mask=48,
    num_time_masks=2,
    num_freq_masks=2,
    fill="mean",
    probability=REFERENCE_SPECAUGMENT_PROBABILITY,
    sampling="reference",
)


def _masked(original: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
    return (augmented == 0) & (original != 0)


def _version_1_spec_augment(
    features: torch.Tensor, time_mask: int, freq_mask: int, uniforms: torch.Tensor
) -> torch.Tensor:
    """lungsrad 1's SpecAugment as it was written (the torchaudio formula), for the replay test."""

    def axis_mask(size, max_width, width_uniform, start_uniform):
        max_width = min(max_width, size)
        width = width_uniform * max_width
        start = start_uniform * (size - width)
        first = start.long()
        end = (start + width).long()
        positions = torch.arange(size)
        return (positions >= first[:, None]) & (positions < end[:, None])

    batch, frames, bins = features.shape
    masked = torch.zeros(batch, frames, bins, dtype=torch.bool)
    masked |= axis_mask(frames, time_mask, uniforms[0], uniforms[1])[:, :, None]
    masked |= axis_mask(bins, freq_mask, uniforms[2], uniforms[3])[:, None, :]
    return features.masked_fill(masked, 0.0)


def _reference_cover_probability(size: int, max_width: int) -> np.ndarray:
    """P(index i lies in one reference mask): width w = int(U[0, max)) (each of 0..max-1 with
    probability 1 / max), start uniform over the integers 0..size - w (random.randint)."""
    index = np.arange(size)
    probability = np.zeros(size)
    for width in range(max_width):
        starts = size - width + 1
        low = np.maximum(0, index - width + 1)
        high = np.minimum(index, size - width)
        probability += np.maximum(high - low + 1, 0) / starts / max_width
    return probability


def _reference_masked_share(frames: int, bins: int, policy: SpecAugmentPolicy) -> float:
    """Expected share of masked cells under the reference, exactly: masks are independent, a
    cell is masked when its frame or its bin is, and the whole step runs with probability p."""
    time_cover = _reference_cover_probability(frames, policy.time_mask)
    freq_cover = _reference_cover_probability(bins, policy.freq_mask)
    frames_kept = np.mean((1 - time_cover) ** policy.num_time_masks)
    bins_kept = np.mean((1 - freq_cover) ** policy.num_freq_masks)
    return policy.probability * (1.0 - frames_kept * bins_kept)


def test_version_1_configs_replay_the_old_masks_bit_for_bit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = config_from_dict({"config_version": 1, "train": {"time_mask": 30}})
    policy = SpecAugmentPolicy.from_train(config.train)
    assert policy is not None and policy.rows == 4
    features = torch.rand(64, 100, 40) + 1.0
    generator = torch.Generator().manual_seed(3)
    uniforms = sample_mask_uniforms(1, 64, policy=policy, generator=generator)[0]
    # The uniforms are the old (4, batch) draw: torch.rand(steps, 4, batch) from the stream.
    assert torch.equal(
        uniforms, torch.rand(1, 4, 64, generator=torch.Generator().manual_seed(3))[0]
    )
    old = _version_1_spec_augment(features, 30, config.train.freq_mask, uniforms)
    new = spec_augment(features, policy=policy, uniforms=uniforms)
    assert torch.equal(new, old)
    assert not torch.equal(new, features)


def test_masked_and_applied_shares_follow_the_reference_distribution():
    frames, bins, samples = 798, 128, 40_000
    expected = _reference_masked_share(frames, bins, REFERENCE)
    assert expected == pytest.approx(0.3828, abs=5e-4)  # cf. 38.1 % measured on ICBHI maps
    uniforms = sample_mask_uniforms(
        1, samples, policy=REFERENCE, generator=torch.Generator().manual_seed(0)
    )[0]
    time_masked, freq_masked, applied = mask_layout(REFERENCE, frames, bins, uniforms)
    time_share = time_masked.double().mean(dim=1)
    freq_share = freq_masked.double().mean(dim=1)
    per_sample = 1.0 - (1.0 - time_share) * (1.0 - freq_share)
    error = 4 * per_sample.std().item() / samples**0.5
    assert per_sample.mean().item() == pytest.approx(expected, abs=error)
    p = REFERENCE_SPECAUGMENT_PROBABILITY
    assert applied.double().mean().item() == pytest.approx(
        p, abs=4 * (p * (1 - p) / samples) ** 0.5
    )
    # Version 1 (one mask per axis, torchaudio's continuous sampling, always) masked far less.
    old = SpecAugmentPolicy(time_mask=160, freq_mask=48)
    old_time, old_freq, _ = mask_layout(
        old,
        frames,
        bins,
        sample_mask_uniforms(1, samples, policy=old, generator=torch.Generator())[0],
    )
    old_share = 1.0 - (1.0 - old_time.double().mean(1)) * (1.0 - old_freq.double().mean(1))
    assert old_share.mean().item() == pytest.approx(0.269, abs=0.003)


def test_spec_augment_masks_the_cells_of_its_layout_on_real_sized_maps():
    frames, bins, samples = 798, 128, 200
    zero_fill = SpecAugmentPolicy(**{**REFERENCE.__dict__, "fill": "zero"})
    features = torch.rand(samples, frames, bins) + 1.0
    uniforms = sample_mask_uniforms(
        1, samples, policy=zero_fill, generator=torch.Generator().manual_seed(1)
    )[0]
    masked = _masked(features, spec_augment(features, policy=zero_fill, uniforms=uniforms))
    time_masked, freq_masked, applied = mask_layout(zero_fill, frames, bins, uniforms)
    assert torch.equal(masked, time_masked[:, :, None] | freq_masked[:, None, :])
    share = masked.double().mean().item()
    assert share == pytest.approx(_reference_masked_share(frames, bins, REFERENCE), abs=0.04)
    changed = masked.any(dim=(1, 2))
    assert torch.equal(changed, applied)  # an all-zero-width draw has odds ~1e-7


def test_reference_widths_and_starts_are_uniform_integers():
    policy = SpecAugmentPolicy(time_mask=6, freq_mask=0, sampling="reference")
    uniforms = sample_mask_uniforms(1, 60_000, policy=policy, generator=torch.Generator())[0]
    time_masked, freq_masked, _ = mask_layout(policy, 8, 4, uniforms)
    assert not freq_masked.any()
    widths = time_masked.sum(dim=1)
    counts = torch.bincount(widths, minlength=7).double() / widths.numel()
    assert counts[6] == 0  # int(U[0, 6)) never reaches 6
    assert torch.allclose(counts[:6], torch.full((6,), 1 / 6, dtype=torch.float64), atol=0.01)
    # Width 2 on 8 frames: the 7 starts 0..6 (random.randint's inclusive end) equally often.
    starts = time_masked[widths == 2].double().argmax(dim=1)
    frequencies = torch.bincount(starts.long(), minlength=8).double() / starts.numel()
    assert frequencies[7] == 0
    assert torch.allclose(frequencies[:7], torch.full((7,), 1 / 7, dtype=torch.float64), atol=0.02)


def test_mean_fill_is_the_reference_two_stage_mean():
    # One 4 x 3 map (frames x bins); frequency band = bin 2, time span = frame 1.
    features = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    policy = SpecAugmentPolicy(
        time_mask=2, freq_mask=2, fill="mean", sampling="reference", probability=0.5
    )
    # Rows: time width, time start, freq width, freq start, applied draw. Width floor(u * 2) = 1.
    uniforms = torch.tensor([[0.6], [0.3], [0.6], [0.9], [0.2]])
    augmented = spec_augment(features, policy=policy, uniforms=uniforms)
    # By hand, as util/augmentation.py: mean 5.5 fills bin 2; then the mean of that map fills
    # frame 1.
    expected = features.clone()
    expected[0, :, 2] = 5.5
    expected[0, 1, :] = expected.mean()
    assert expected[0, 1, 0] == pytest.approx((66 - (2 + 5 + 8 + 11) + 4 * 5.5) / 12)
    assert torch.equal(augmented, expected)
    # The applied draw above p leaves the sample untouched.
    skipped = uniforms.clone()
    skipped[4] = 0.7
    assert torch.equal(spec_augment(features, policy=policy, uniforms=skipped), features)


def test_same_generator_seed_gives_the_same_masks_and_input_is_untouched():
    features = torch.rand(8, 50, 20) + 1.0
    before = features.clone()
    policy = SpecAugmentPolicy(time_mask=20, freq_mask=8)
    first = spec_augment(features, policy=REFERENCE, generator=torch.Generator().manual_seed(5))
    second = spec_augment(features, policy=REFERENCE, generator=torch.Generator().manual_seed(5))
    third = spec_augment(features, policy=REFERENCE, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)
    assert torch.equal(features, before)
    assert spec_augment(features, policy=policy, generator=torch.Generator()).shape == (8, 50, 20)


def test_zero_widths_and_masks_wider_than_the_axis():
    features = torch.rand(4, 10, 6) + 1.0
    for sampling in ("torchaudio", "reference"):
        off = SpecAugmentPolicy(time_mask=0, freq_mask=0, sampling=sampling)
        assert torch.equal(
            spec_augment(features, policy=off, generator=torch.Generator()), features
        )
        wide = SpecAugmentPolicy(time_mask=500, freq_mask=500, sampling=sampling, fill="mean")
        out = spec_augment(features, policy=wide, generator=torch.Generator().manual_seed(1))
        assert out.shape == features.shape and torch.isfinite(out).all()


def test_version_1_masks_are_one_span_per_axis():
    features = torch.rand(32, 100, 40) + 1.0
    augmented = spec_augment(features, policy=VERSION_1, generator=torch.Generator().manual_seed(0))
    masked = _masked(features, augmented)
    for sample in range(features.shape[0]):
        frames = masked[sample].all(dim=1).nonzero().flatten()
        bins = masked[sample].all(dim=0).nonzero().flatten()
        for span, limit in ((frames, 30), (bins, 12)):
            assert span.numel() <= limit
            if span.numel():
                assert torch.equal(span, torch.arange(span[0], span[0] + span.numel()))
