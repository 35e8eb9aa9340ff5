"""What the SpecAugment switches change: the share of a (798, 128) map's cells that training masks,
and the share of samples augmented at all, for the authors' recipe (configs/lung_srad_authors.yaml)
and for lungsrad 1's SpecAugment (a config_version 1 config), side by side, each from as many
draws. The reference's exact expectation is in tests/lungsrad/training/test_specaugment.py.

Usage: python benchmarks/specaugment_share.py [--samples N] [--seed S]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from lungsrad.config import config_from_dict, expected_num_frames, load_config
from lungsrad.training.specaugment import SpecAugmentPolicy, mask_layout, sample_mask_uniforms

REPO = Path(__file__).resolve().parents[1]


def masked_shares(policy: SpecAugmentPolicy, *, frames: int, bins: int, samples: int, seed: int):
    """(mean masked share of the cells, share of samples augmented), both in percent."""
    generator = torch.Generator().manual_seed(seed)
    uniforms = sample_mask_uniforms(1, samples, policy=policy, generator=generator)[0]
    time_masked, freq_masked, applied = mask_layout(policy, frames, bins, uniforms)
    kept = (1 - time_masked.float().mean(1)) * (1 - freq_masked.float().mean(1))
    return 100 * float((1 - kept).mean()), 100 * float(applied.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    authors = load_config(REPO / "configs" / "lung_srad_authors.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the version-1 notice
        legacy = config_from_dict({"config_version": 1})
    frames, bins = expected_num_frames(authors.data), authors.data.num_mel_bins
    print(f"{frames} x {bins} maps, {args.samples} samples, seed {args.seed}")
    for name, config in (("authors' recipe", authors), ("lungsrad 1", legacy)):
        policy = SpecAugmentPolicy.from_train(config.train)
        assert policy is not None
        masked, applied = masked_shares(
            policy, frames=frames, bins=bins, samples=args.samples, seed=args.seed
        )
        print(f"{name:16s} masked {masked:6.2f} % of cells, augmented {applied:6.2f} % of samples")


if __name__ == "__main__":
    main()
