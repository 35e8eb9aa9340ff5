"""What each data switch changes: max |difference| of the model inputs against the Lung-SRAD
authors' own (shared/reference_pipeline/reference_inputs.pt, 32 cycles), from the authors' DASS
and AST settings and with one switch at a time flipped away from them.

Usage: python benchmarks/reference_pipeline_switches.py [--reference DIR]
For each setting it prints the largest and the smallest per-cycle max |difference| computed in
float32, how many cycles exceed the 4e-3 tolerance, and the largest through the float16 feature
cache (what training and `lungsrad data features` use). Inputs of another frame count than the
reference's are resized to it before comparing.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from lungsrad.config import DataConfig
from lungsrad.data.features import build_feature_set, compute_fbank, resize_frames
from lungsrad.data.icbhi import load_icbhi_index
from lungsrad.data.waveform import load_cycle_waveforms

TOLERANCE = 4e-3
AUTHORS = {"fade": "reference", "cycle_slicing": "truncated", "padding": "repeat"}
BASES = {
    "dass_input": {**AUTHORS, "normalization": "per_example", "model_frames": 1024},
    "ast_input": {**AUTHORS, "normalization": "audioset", "model_frames": None},
}
FLIPS = {
    "authors' settings": {},
    "fade none": {"fade": "none"},
    "cycle_slicing rounded": {"cycle_slicing": "rounded"},
    "padding zero (zero_padding centre)": {"padding": "zero", "zero_padding": "centre"},
    "padding zero, zero_padding end": {"padding": "zero", "zero_padding": "end"},
    "normalization audioset": {"normalization": "audioset"},
    "normalization per_example": {"normalization": "per_example"},
    "model_frames null": {"model_frames": None},
    "model_frames 1024": {"model_frames": 1024},
    "version 1 (fade none, rounded, audioset, 798 frames)": {
        "fade": "none",
        "cycle_slicing": "rounded",
        "normalization": "audioset",
        "model_frames": None,
    },
}


def float32_inputs(root: Path, config: DataConfig) -> torch.Tensor:
    """(cycles, frames, bins) model inputs computed without the float16 cache."""
    maps = [
        compute_fbank(waveform, config)
        for recording in load_icbhi_index(root)
        for waveform in load_cycle_waveforms(recording, config)
    ]
    return resize_frames(torch.stack(maps), config.model_frames).float()


def per_cycle_errors(inputs: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """(cycles,) max |difference|, after resizing `inputs` to the reference's frames."""
    inputs = resize_frames(inputs, expected.shape[1]).float()
    return (inputs - expected.float()).abs().amax(dim=(1, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1].parent / "shared" / "reference_pipeline"
    parser.add_argument("--reference", type=Path, default=default, help="reference_pipeline/")
    args = parser.parse_args()
    reference = torch.load(args.reference / "reference_inputs.pt", weights_only=True)
    root = args.reference / "recordings"
    with tempfile.TemporaryDirectory() as cache:
        for key, base in BASES.items():
            for name, change in FLIPS.items():
                if change and all(base.get(k) == v for k, v in change.items()):
                    continue  # not a flip for this backbone
                config = DataConfig(cache_dir=cache, **{**base, **change})
                errors = per_cycle_errors(float32_inputs(root, config), reference[key])
                cached = build_feature_set(config, root, show_progress=False).features
                cached_errors = per_cycle_errors(
                    resize_frames(cached.float(), config.model_frames), reference[key]
                )
                over = int((errors > TOLERANCE).sum())
                print(
                    f"{key:10s} {name:53s} float32 max {errors.max():.2e}, "
                    f"min per cycle {errors.min():.2e}, over {TOLERANCE:g}: {over:2d}/"
                    f"{len(errors)}; via the cache max {cached_errors.max():.2e}"
                )


if __name__ == "__main__":
    main()
