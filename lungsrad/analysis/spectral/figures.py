"""The spectral analysis as figures: one DASS checkpoint per stage and axis (the layout of the
paper's Fig. 2), and checkpoints side by side (Fig. 1: AST's attention against DASS's SS2D).
Matplotlib (Agg) is imported only when a figure is drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lungsrad.analysis.spectral.curves import AXES, DB_FLOOR, CheckpointResponse, ResponseCurve
from lungsrad.analysis.spectral.dass import (
    VARIANT_SCAN,
    VARIANT_SCANNED,
    VARIANT_SCANNED_SMOOTHED,
    gaussian_frequency_response,
    patch_spans,
)
from lungsrad.analysis.spectral.tables import compared_curves
from lungsrad.files import save_figure

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
# Line style and width of each SS2D variant drawn by `plot_curves`.
_STYLES = {
    VARIANT_SCANNED: ("-", 1.6),
    VARIANT_SCANNED_SMOOTHED: ("--", 1.6),
    VARIANT_SCAN: (":", 1.0),
}


def _axis_title(axis_name: str) -> str:
    return "time" if axis_name == "time" else "frequency"


def _save_png(figure: Any, path: str | os.PathLike[str]) -> None:
    save_figure(figure, path, dpi=110)


# ---------------------------------------------------------------------------------------------
# One DASS checkpoint (Fig. 2)


def _skip_note(curves: Sequence[ResponseCurve]) -> str:
    """One line per block: the skip term against the scanned part at 0 cycles per patch."""
    lines = []
    for curve in sorted(curves, key=lambda c: c.block):
        scanned_dc = float(curve.response[0])
        share = curve.skip_gain / (curve.skip_gain + scanned_dc) if scanned_dc > 0 else 1.0
        verdict = "whole block ~ all-pass" if share > 0.9 else "scan shapes the block"
        lines.append(
            f"b{curve.block}: |D| {curve.skip_gain:.2g} vs scan {scanned_dc:.2g} ({verdict})"
        )
    return "\n".join(lines)


def _draw_gaussian(ax: Any, gaussian: tuple[int, float]) -> None:
    # On a fine grid: the Gaussian is a continuous response (the curves are sampled at the
    # stage's patch grid).
    fine = 256
    gain = gaussian_frequency_response(gaussian[0], gaussian[1], fine).numpy()
    with np.errstate(divide="ignore"):
        level = np.maximum(20 * np.log10(np.maximum(gain, 1e-300)), DB_FLOOR)
    ax.plot(np.fft.rfftfreq(fine), level, color="0.5", linewidth=2.5, alpha=0.5, zorder=0)


def _draw_stage_panel(
    ax: Any,
    here: Sequence[ResponseCurve],
    *,
    stage: int,
    axis_name: str,
    span: str | None,
    gaussian: tuple[int, float] | None,
    is_first_column: bool,
) -> tuple[float, float]:
    """One stage's curves along one axis; returns the lowest and highest level drawn (and 0)."""
    lowest, highest = 0.0, 0.0
    for curve in here:
        if curve.variant not in _STYLES:
            continue
        linestyle, width = _STYLES[curve.variant]
        level = curve.relative_db()
        lowest = min(lowest, float(level.min()))
        highest = max(highest, float(level.max()))
        ax.plot(
            curve.cycles_per_cell,
            level,
            color=f"C{curve.block % 10}",
            linestyle=linestyle,
            linewidth=width,
            marker=_MARKERS[curve.block % len(_MARKERS)] if linestyle == "-" else None,
            markersize=4,
            label=f"block {curve.block}" if curve.variant == VARIANT_SCANNED else None,
        )
    smoothed_here = any(c.variant == VARIANT_SCANNED_SMOOTHED for c in here)
    if gaussian is not None and smoothed_here:
        _draw_gaussian(ax, gaussian)
    scanned = [c for c in here if c.variant == VARIANT_SCANNED]
    if scanned:
        ax.text(
            0.02, 0.02, _skip_note(scanned), transform=ax.transAxes, fontsize=6.5,
            va="bottom", ha="left", family="monospace",
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
        )  # fmt: skip
    name = _axis_title(axis_name)
    smoothed_text = " (smoothed)" if smoothed_here else ""
    ax.set_title(f"stage {stage}, {name} axis{smoothed_text}", fontsize=9)
    ax.set_xlabel(f"cycles per patch ({span})" if span else "cycles per patch", fontsize=8)
    if is_first_column:
        ax.set_ylabel(f"{name}: dB re. 0 cycles/patch", fontsize=8)
    ax.set_xlim(0, 0.5)
    ax.grid(True, alpha=0.3)
    if scanned:
        ax.legend(fontsize=6.5, loc="upper right")
    return lowest, highest


def _curves_legend(figure: Any) -> None:
    from matplotlib.lines import Line2D

    figure.legend(
        handles=[
            Line2D([], [], color="k", linestyle="-", label="scanned part (skip D removed)"),
            Line2D([], [], color="k", linestyle="--", label="scanned part after the Gaussian"),
            Line2D([], [], color="k", linestyle=":", label="whole block (scan + D)"),
            Line2D([], [], color="0.5", linewidth=2.5, alpha=0.5, label="Gaussian alone"),
        ],
        loc="lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )


def plot_curves(
    curves: Sequence[ResponseCurve],
    path: str | os.PathLike[str],
    *,
    title: str,
    spans: dict[tuple[int, str], str] | None = None,
    gaussian: tuple[int, float] | None = None,
) -> None:
    """Writes a PNG (atomically) in the layout of the paper's Fig. 2: rows = time / frequency
    axis, columns = stages, one colour and marker per block; levels in dB relative to the
    response at 0 cycles per patch on one y-scale per row.

    Solid: the scanned part alone (skip term D removed); dashed: the scanned part after the
    Gaussian smoothing (smoothed blocks); dotted: the whole block with D, which is flat when D
    dominates; grey: the Gaussian's own response. Each panel notes |D| against the scan.

    Args:
        curves: from `dass.spectral_response_curves`.
        path: the PNG.
        title: figure title.
        spans: (stage, axis) -> what one patch spans ("1 patch = 40 ms"), for the x labels.
        gaussian: (kernel_size, sigma) of the smoothing, to draw its response.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stages = sorted({curve.stage for curve in curves})
    figure = Figure(figsize=(4.6 * len(stages), 8.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(AXES), len(stages), squeeze=False, sharey="row")
    for row, axis_name in enumerate(AXES):
        lowest, highest = 0.0, 0.0
        for column, stage in enumerate(stages):
            low, high = _draw_stage_panel(
                axes[row][column],
                [c for c in curves if c.axis == axis_name and c.stage == stage],
                stage=stage,
                axis_name=axis_name,
                span=(spans or {}).get((stage, axis_name)),
                gaussian=gaussian,
                is_first_column=column == 0,
            )
            lowest, highest = min(lowest, low), max(highest, high)
        axes[row][0].set_ylim(max(DB_FLOOR, lowest) - 2, max(highest, 0.0) + 4)
    _curves_legend(figure)
    figure.suptitle(
        f"{title}\n|DFT of each block's lag profile|, averaged over channels and examples; "
        "0.5 cycles per patch = a period of 2 patches",
        fontsize=10,
    )
    # Fixed margins instead of a layout engine: constrained layout draws the figure twice.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.11, top=0.88, wspace=0.12, hspace=0.38)
    _save_png(figure, path)


def draw_ss2d_figure(measured: CheckpointResponse, path: str | os.PathLike[str]) -> None:
    """`plot_curves` of one DASS checkpoint, with its patch spans and its Gaussian."""
    config, curves = measured.config, measured.curves
    regularization = config.method.regularization
    plot_curves(
        curves,
        path,
        title=f"SS2D spectral response: {config.name} ({measured.checkpoint.name})",
        spans=patch_spans(config, sorted({curve.stage for curve in curves})),
        gaussian=(
            (regularization.kernel_size, regularization.sigma) if regularization.enabled else None
        ),
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints side by side (Fig. 1)


def _draw_comparison_panel(
    figure: Any, ax: Any, item: CheckpointResponse, axis_name: str, *, is_first_column: bool
) -> tuple[float, float]:
    """One checkpoint's blocks along one axis, coloured by depth with a colour bar; returns the
    lowest and highest level drawn (and 0)."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    colormap = matplotlib.colormaps["viridis"]
    lowest, highest = 0.0, 0.0
    curves = [c for c in compared_curves(item) if c.axis == axis_name]
    order = sorted({(c.stage, c.block) for c in curves})
    scale = Normalize(0, max(len(order) - 1, 1))
    # DASS's skip term D can flatten its whole operator; its scanned part (D removed) is drawn
    # dashed beside it, as the DASS figure does.
    scanned = sorted(
        (c for c in item.curves if c.variant == VARIANT_SCANNED and c.axis == axis_name),
        key=lambda c: (c.stage, c.block),
    )
    for curve in [*curves, *scanned]:
        level = curve.relative_db()
        lowest = min(lowest, float(level.min()))
        highest = max(highest, float(level.max()))
        is_scanned = curve.variant == VARIANT_SCANNED
        ax.plot(
            curve.cycles_per_cell,
            level,
            color=colormap(scale(order.index((curve.stage, curve.block)))),
            linewidth=1.0 if is_scanned else 1.4,
            linestyle="--" if is_scanned else "-",
            marker=None if is_scanned else "o",
            markersize=2.5,
        )
    name = _axis_title(axis_name)
    ax.set_title(f"{item.label}\n{name} axis", fontsize=9)
    ax.set_xlabel(f"cycles per patch ({item.spans[axis_name]})", fontsize=8)
    if is_first_column:
        ax.set_ylabel(f"{name}: dB re. 0 cycles/patch", fontsize=9)
    ax.set_xlim(0, 0.5)
    ax.grid(True, alpha=0.3)
    stages = len({stage for stage, _ in order})
    names = [f"s{s} b{b}" if stages > 1 else f"block {b}" for s, b in order]
    bar = figure.colorbar(ScalarMappable(norm=scale, cmap=colormap), ax=ax, pad=0.02, fraction=0.05)
    ticks = sorted({0, len(order) // 2, len(order) - 1})
    bar.set_ticks(ticks, labels=[names[t] for t in ticks], fontsize=7)
    bar.set_label("depth", fontsize=7)
    return lowest, highest


def _comparison_legend(figure: Any) -> None:
    import matplotlib
    from matplotlib.lines import Line2D

    colormap = matplotlib.colormaps["viridis"]
    figure.legend(
        handles=[
            Line2D([], [], color=colormap(0.0), marker="o", label="first block"),
            Line2D([], [], color=colormap(1.0), marker="o", label="last block"),
            Line2D([], [], color="0.3", label="whole operator (AST attention; DASS scan + D)"),
            Line2D([], [], color="0.3", linestyle="--", label="DASS scanned part (D removed)"),
        ],
        loc="lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )


def plot_comparison(
    measured: Sequence[CheckpointResponse], path: str | os.PathLike[str], *, title: str
) -> None:
    """Writes a PNG (atomically): one column per checkpoint, rows time / frequency axis.

    Each block's response in dB relative to its value at 0 cycles per patch, one y-scale per
    row (shared by the columns), coloured by depth (first block dark, last block light, with a
    colour bar naming the blocks); the AST's attention matrices and DASS's SS2D mixing
    operators (scan + skip D), i.e. each block's token mixing without its residual path, solid;
    DASS's scanned part alone (D removed) dashed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = len(measured)
    figure = Figure(figsize=(5.6 * columns + 0.8, 8.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(AXES), columns, squeeze=False, sharey="row")
    for row, axis_name in enumerate(AXES):
        lowest, highest = 0.0, 0.0
        for column, item in enumerate(measured):
            low, high = _draw_comparison_panel(
                figure, axes[row][column], item, axis_name, is_first_column=column == 0
            )
            lowest, highest = min(lowest, low), max(highest, high)
        axes[row][0].set_ylim(max(DB_FLOOR, lowest) - 2, max(highest, 0.0) + 3)
    _comparison_legend(figure)
    figure.suptitle(
        f"{title}\nAST: |DFT| of the attention's circulant part (patch to patch); DASS: |DFT| of "
        "the SS2D lag profile (scan + skip D); mean over heads / channels and examples",
        fontsize=9,
    )
    figure.subplots_adjust(left=0.07, right=0.95, bottom=0.11, top=0.86, wspace=0.28, hspace=0.45)
    _save_png(figure, path)


def draw_attention_figure(measured: CheckpointResponse, path: str | os.PathLike[str]) -> None:
    """`plot_comparison` of one AST checkpoint alone."""
    config = measured.config
    plot_comparison(
        [measured],
        path,
        title=f"AST attention spectral response: {config.name} ({measured.checkpoint.name})",
    )
