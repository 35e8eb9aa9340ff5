"""The curve types every backbone's spectral analysis shares: one block's response along one
axis (`ResponseCurve`), one checkpoint's curves (`CheckpointResponse`), and the helpers both
backbones' readings use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from lungsrad.config import (
    ExperimentConfig,
    RegularizationConfig,
    expected_num_frames,
    model_input_frames,
)
from lungsrad.models import Backbone

Axis = Literal["time", "freq"]
AXES: tuple[Axis, ...] = ("time", "freq")
DB_FLOOR = -40.0  # lowest level drawn, dB relative to the response at 0 cycles per patch


@dataclass(frozen=True)
class ResponseCurve:
    """One block's response along one axis, averaged over channels and examples."""

    stage: int
    block: int
    axis: Axis
    variant: str  # dass.VARIANT_* (before or after the Gaussian) or ast.VARIANT_ATTENTION
    num_cells: int  # n: W for time, H for freq, at this stage's resolution
    cycles_per_cell: np.ndarray  # (n // 2 + 1,) 0 .. 0.5
    response: np.ndarray  # (n // 2 + 1,)
    skip_gain: float = math.nan  # mean |D| over the direction's channels

    def dc_share(self) -> float:
        """Share of the response's energy (over all n DFT bins) at 0 cycles per patch."""
        power = np.asarray(self.response, dtype=np.float64) ** 2
        n = self.num_cells
        assert power.shape == (n // 2 + 1,), (power.shape, n)
        mirrored = power[1 : (n + 1) // 2].sum()  # bins k with a twin n - k (not DC / Nyquist)
        total = power[0] + 2 * mirrored + (power[-1] if n % 2 == 0 and n > 1 else 0.0)
        return float(power[0] / total) if total > 0 else float("nan")

    def relative_db(self) -> np.ndarray:
        """20 log10 of the response over its value at 0 cycles per patch (floored)."""
        reference = self.response[0] if self.response[0] > 0 else np.max(self.response)
        with np.errstate(divide="ignore"):
            level = 20 * np.log10(np.maximum(self.response, 1e-300) / reference)
        return np.maximum(level, DB_FLOOR)


def band_ratio(curve: ResponseCurve) -> float:
    """Mean response in the upper half of the band over the lower half (< 1: low-pass)."""
    half = len(curve.response) // 2
    low, high = curve.response[: max(half, 1)], curve.response[max(half, 1) :]
    if len(high) == 0 or low.mean() == 0:
        return float("nan")
    return float(high.mean() / low.mean())


def smoothed_blocks(
    model: Backbone, regularization: RegularizationConfig | None
) -> set[tuple[int, int]]:
    """(stage, block) of every block whose output the run's spectral regularization smooths."""
    if regularization is None or not regularization.enabled:
        return set()
    depth = tuple(model.depths)[regularization.stage]
    blocks = range(depth) if regularization.blocks == "all" else regularization.blocks
    return {(regularization.stage, index) for index in blocks}


def model_frame_ms(config: ExperimentConfig) -> float:
    """Milliseconds one frame of the model's input spans (data.model_frames stretches them)."""
    data = config.data
    return data.frame_shift_ms * expected_num_frames(data) / model_input_frames(data)


@dataclass(frozen=True)
class CheckpointResponse:
    """One checkpoint's curves, as `lungsrad spectral` measured them."""

    checkpoint: Path
    config: ExperimentConfig
    curves: list[ResponseCurve] = field(repr=False)
    num_examples: int
    smoothed_blocks: list[tuple[int, int]]
    spans: dict[str, str]  # axis -> what one patch step spans ("1 patch step = 100 ms")

    @property
    def backbone(self) -> str:
        """model.backbone of the checkpoint ("dass" or "ast")."""
        return self.config.model.backbone

    @property
    def label(self) -> str:
        """How figures and tables name it: "AST (run name, file)"."""
        return f"{self.backbone.upper()} ({self.config.name}, {self.checkpoint.name})"
