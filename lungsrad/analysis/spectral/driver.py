"""The driver of `lungsrad spectral`: a trained checkpoint of either backbone -> its model
(`load_trained_model`) -> every block's spectral response -> CSV, figure and summary text; and
`--compare`, checkpoints side by side (Fig. 1). The backbone's part comes from registry.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lungsrad.analysis.spectral.curves import CheckpointResponse, ResponseCurve, smoothed_blocks
from lungsrad.analysis.spectral.figures import plot_comparison
from lungsrad.analysis.spectral.registry import ANALYSES
from lungsrad.analysis.spectral.tables import comparison_csv, comparison_line, curves_to_csv
from lungsrad.config import ExperimentConfig
from lungsrad.data.features import build_feature_set, resize_frames
from lungsrad.errors import UserError
from lungsrad.files import write_text_atomic
from lungsrad.training.trained_model import load_trained_model

CSV_NAME = "spectral_response.csv"
FIGURE_NAME = "spectral_response.png"
COMPARE_CSV_NAME = "spectral_compare.csv"
COMPARE_FIGURE_NAME = "spectral_compare.png"


@dataclass
class SpectralSummary:
    """What `run_spectral_analysis` wrote."""

    output_dir: Path
    csv_path: Path
    figure_path: Path
    num_examples: int
    curves: list[ResponseCurve] = field(repr=False)
    smoothed_blocks: list[tuple[int, int]]
    backbone: str = "dass"  # model.backbone of the checkpoint

    def format_text(self) -> str:
        """The paths and, per block, how low-pass it is (DASS: its scanned part, and how much
        the skip term D flattens the whole block; AST: its attention)."""
        analysis = ANALYSES[self.backbone]
        num_blocks = len({(c.stage, c.block) for c in self.curves})
        return "\n".join(
            [
                f"spectral response of {num_blocks} {analysis.blocks_name} blocks, "
                f"{self.num_examples} examples (reading: {analysis.reading})",
                f"  CSV: {self.csv_path}",
                f"  figure: {self.figure_path}",
                *analysis.summary_lines(self.curves, self.smoothed_blocks),
            ]
        )


@dataclass
class ComparisonSummary:
    """What `run_spectral_comparison` wrote."""

    csv_path: Path
    figure_path: Path
    measured: list[CheckpointResponse] = field(repr=False)

    def format_text(self) -> str:
        """The paths, then per checkpoint the mean band ratio over its blocks along each axis."""
        lines = [
            f"spectral comparison of {len(self.measured)} checkpoints",
            f"  CSV: {self.csv_path}",
            f"  figure: {self.figure_path}",
            "  mean high/low band ratio over blocks (< 1 means low-pass; 1 = all-pass) and "
            "mean DC share:",
        ]
        lines += [comparison_line(item) for item in self.measured]
        return "\n".join(lines)


def _example_features(
    config: ExperimentConfig, data_root: str | os.PathLike[str] | None, count: int
) -> torch.Tensor:
    """`count` test cycles spread evenly over the official test split (all cycles without one)."""
    if data_root is None and config.data.root is None:
        raise UserError("no dataset: pass --data DIR (data.root is not set in the checkpoint)")
    feature_set = build_feature_set(config.data, data_root, show_progress=False)
    test = [i for i, split in enumerate(feature_set.official_split) if split == "test"]
    pool = test or list(range(len(feature_set.labels)))
    picks = sorted(
        set(np.linspace(0, len(pool) - 1, num=min(count, len(pool))).round().astype(int))
    )
    return feature_set.features[[pool[i] for i in picks]].float()


def _check_num_examples(num_examples: int) -> None:
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise UserError(f"number of examples must be >= 1, got {num_examples!r}")


def measure_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None,
    num_examples: int,
    features: torch.Tensor | None = None,
) -> CheckpointResponse:
    """Loads a training checkpoint's model (its `model.backbone`) and measures every block.

    DASS: the SS2D responses of `dass.spectral_response_curves`; AST: the attention responses
    of `ast.attention_response_curves`. The run's spectral regularization hooks are attached
    while measuring, so later blocks see the smoothed maps the run trained with.
    """
    _check_num_examples(num_examples)
    # Any scan backend gives the same operands; "auto" runs wherever the analysis does.
    trained = load_trained_model(checkpoint, device="cpu", scan_backend="auto")
    config, model = trained.config, trained.model
    analysis = ANALYSES[config.model.backbone]
    if features is None:
        features = _example_features(config, data_root, num_examples)
    else:
        features = features[:num_examples].float()
    # The frames the run's model saw (training and evaluation resize to data.model_frames).
    features = resize_frames(features, config.data.model_frames)
    return CheckpointResponse(
        checkpoint=Path(checkpoint),
        config=config,
        curves=analysis.measure(model, features, config),
        num_examples=int(features.shape[0]),
        smoothed_blocks=sorted(smoothed_blocks(model, config.method.regularization)),
        spans=analysis.axis_spans(config, model),
    )


def run_spectral_analysis(
    checkpoint: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None,
    output_dir: str | os.PathLike[str],
    num_examples: int,
    features: torch.Tensor | None = None,
) -> SpectralSummary:
    """Builds the checkpoint's model, measures every block's spectral response, writes outputs.

    Args:
        checkpoint: a lungsrad training checkpoint (`checkpoint.pt`) of a DASS or an AST.
        data_root: dataset folder (None: the checkpoint config's data.root).
        output_dir: receives spectral_response.csv and spectral_response.png.
        num_examples: test cycles to average over (spread evenly over the official test split).
        features: (N, T, F) inputs to use instead of the dataset (tests, notebooks).

    Returns:
        A summary with the paths and the curves.
    """
    measured = measure_checkpoint(
        checkpoint, data_root=data_root, num_examples=num_examples, features=features
    )
    output_dir = Path(output_dir)
    csv_path = output_dir / CSV_NAME
    figure_path = output_dir / FIGURE_NAME
    write_text_atomic(csv_path, curves_to_csv(measured.curves))
    ANALYSES[measured.backbone].draw(measured, figure_path)
    return SpectralSummary(
        output_dir=output_dir,
        csv_path=csv_path,
        figure_path=figure_path,
        num_examples=measured.num_examples,
        curves=measured.curves,
        smoothed_blocks=measured.smoothed_blocks,
        backbone=measured.backbone,
    )


def run_spectral_comparison(
    checkpoints: Sequence[str | os.PathLike[str]],
    *,
    data_root: str | os.PathLike[str] | None,
    output_dir: str | os.PathLike[str],
    num_examples: int,
    features: Sequence[torch.Tensor | None] | None = None,
) -> ComparisonSummary:
    """`lungsrad spectral --compare A.pt B.pt`: both checkpoints measured on their own inputs
    (each checkpoint's data settings, the same dataset and test cycles) and drawn side by side.

    Args:
        checkpoints: two (or more) lungsrad training checkpoints, e.g. an AST and a DASS.
        data_root: dataset folder (None: each checkpoint config's data.root).
        output_dir: receives spectral_compare.csv (a `model` column first) and .png.
        num_examples: test cycles to average over, per checkpoint.
        features: per checkpoint, inputs to use instead of the dataset (tests).
    """
    if len(checkpoints) < 2:
        raise UserError(f"--compare needs two checkpoints, got {len(checkpoints)}")
    _check_num_examples(num_examples)
    given = list(features) if features is not None else [None] * len(checkpoints)
    measured = [
        measure_checkpoint(path, data_root=data_root, num_examples=num_examples, features=inputs)
        for path, inputs in zip(checkpoints, given, strict=True)
    ]
    output_dir = Path(output_dir)
    csv_path = output_dir / COMPARE_CSV_NAME
    figure_path = output_dir / COMPARE_FIGURE_NAME
    write_text_atomic(csv_path, comparison_csv(measured))
    plot_comparison(
        measured,
        figure_path,
        title="Spectral response per block: "
        + " vs ".join(item.backbone.upper() for item in measured),
    )
    return ComparisonSummary(csv_path=csv_path, figure_path=figure_path, measured=measured)
