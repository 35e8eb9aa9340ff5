"""What each backbone contributes to `lungsrad spectral`, looked up by `model.backbone`: how its
blocks are measured, what a patch step spans, its figure and its summary lines. A new backbone
registers one entry here; the driver never branches on the backbone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lungsrad.analysis.spectral import ast, dass
from lungsrad.analysis.spectral.curves import CheckpointResponse, ResponseCurve
from lungsrad.analysis.spectral.figures import draw_attention_figure, draw_ss2d_figure
from lungsrad.analysis.spectral.tables import attention_summary_lines, ss2d_summary_lines
from lungsrad.config import ExperimentConfig


@dataclass(frozen=True)
class BackboneAnalysis:
    """How the spectral analysis reads one backbone. `model` arguments are that backbone's
    model (the registry key guarantees it), hence `Any`."""

    blocks_name: str  # what its measured blocks are called in the summary ("SS2D")
    reading: str  # how a block's response is read, in a few words
    measure: Callable[[Any, torch.Tensor, ExperimentConfig], list[ResponseCurve]]
    axis_spans: Callable[[ExperimentConfig, Any], dict[str, str]]  # axis -> one step's span
    draw: Callable[[CheckpointResponse, str | os.PathLike[str]], None]
    summary_lines: Callable[[Sequence[ResponseCurve], Sequence[tuple[int, int]]], list[str]]


def _measure_ss2d(
    model: dass.DASS, features: torch.Tensor, config: ExperimentConfig
) -> list[ResponseCurve]:
    return dass.spectral_response_curves(
        model, features, regularization=config.method.regularization
    )


def _measure_attention(
    model: ast.AST, features: torch.Tensor, config: ExperimentConfig
) -> list[ResponseCurve]:
    return ast.attention_response_curves(model, features)


ANALYSES: dict[str, BackboneAnalysis] = {
    "dass": BackboneAnalysis(
        blocks_name="SS2D",
        reading="DFT of the lag profile inside rows/frames",
        measure=_measure_ss2d,
        axis_spans=dass.axis_spans,
        draw=draw_ss2d_figure,
        summary_lines=ss2d_summary_lines,
    ),
    "ast": BackboneAnalysis(
        blocks_name="AST attention",
        reading="circulant part of the within-row / within-column patch attention",
        measure=_measure_attention,
        axis_spans=ast.axis_spans,
        draw=draw_attention_figure,
        summary_lines=attention_summary_lines,
    ),
}
