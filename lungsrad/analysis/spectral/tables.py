"""The spectral analysis as text: CSV of the curves (one checkpoint, or several side by side)
and the per-block summary lines `lungsrad spectral` prints for each backbone.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np

from lungsrad.analysis.spectral.ast import VARIANT_ATTENTION
from lungsrad.analysis.spectral.curves import AXES, CheckpointResponse, ResponseCurve, band_ratio
from lungsrad.analysis.spectral.dass import (
    VARIANT_SCAN,
    VARIANT_SCANNED,
    VARIANT_SCANNED_SMOOTHED,
)

# The curve of each backbone that is its token-mixing operator as a whole: the attention matrix,
# and the SS2D mixing matrix with its skip term D (the blocks' residual paths excluded in both).
COMPARED_VARIANTS = (VARIANT_ATTENTION, VARIANT_SCAN)


def curves_to_csv(curves: Sequence[ResponseCurve]) -> str:
    """CSV text, one row per curve point: stage, block, axis, variant, num_cells, bin,
    cycles_per_cell (cycles per patch), response, skip_gain (mean |D| of the direction)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "stage",
            "block",
            "axis",
            "variant",
            "num_cells",
            "bin",
            "cycles_per_cell",
            "response",
            "skip_gain",
        ]
    )
    for curve in curves:
        for index, (frequency, value) in enumerate(
            zip(curve.cycles_per_cell, curve.response, strict=True)
        ):
            writer.writerow(
                [
                    curve.stage,
                    curve.block,
                    curve.axis,
                    curve.variant,
                    curve.num_cells,
                    index,
                    f"{frequency:.6g}",
                    f"{value:.9g}",
                    f"{curve.skip_gain:.6g}",
                ]
            )
    return buffer.getvalue()


def comparison_csv(measured: Sequence[CheckpointResponse]) -> str:
    """The curves of several checkpoints in one CSV, a `model` column (their labels) first."""
    parts = []
    for index, item in enumerate(measured):
        header, *rows = curves_to_csv(item.curves).splitlines()
        if index == 0:
            parts.append("model," + header)
        label = item.label.replace('"', "'")
        parts += [f'"{label}",{row}' for row in rows]
    return "\n".join(parts) + "\n"


def compared_curves(measured: CheckpointResponse) -> list[ResponseCurve]:
    """Each block's whole token-mixing operator (COMPARED_VARIANTS), by stage and block."""
    curves = [c for c in measured.curves if c.variant in COMPARED_VARIANTS]
    return sorted(curves, key=lambda c: (c.stage, c.block))


def comparison_line(item: CheckpointResponse) -> str:
    """One checkpoint's line of the comparison: mean band ratio and DC share per axis (and
    of DASS's scanned part alone)."""
    parts = []
    for axis in AXES:
        curves = [c for c in compared_curves(item) if c.axis == axis]
        ratio = float(np.nanmean([band_ratio(c) for c in curves]))
        share = float(np.mean([c.dc_share() for c in curves]))
        text = f"{axis} {ratio:.3f} (DC share {share:.0%})"
        scanned = [c for c in item.curves if c.variant == VARIANT_SCANNED and c.axis == axis]
        if scanned:
            mean = float(np.nanmean([band_ratio(c) for c in scanned]))
            text += f", scanned part {mean:.3f}"
        parts.append(text)
    return f"    {item.label}, {len(curves)} blocks: " + "; ".join(parts)


def ss2d_summary_lines(
    curves: Sequence[ResponseCurve], smoothed_blocks: Sequence[tuple[int, int]] = ()
) -> list[str]:
    """Per SS2D block: how low-pass its scanned part is and how much the skip term D flattens
    the whole block (scan + D), along each axis."""
    lines = [
        "  high/low band ratio (< 1 means low-pass) of the scanned part (skip D removed) and "
        "of the whole block (scan + D); D share = |D| / (|D| + scanned response at 0):",
    ]
    by_key = {(c.stage, c.block, c.axis, c.variant): c for c in curves}
    ratio = {key: band_ratio(curve) for key, curve in by_key.items()}
    for stage, block in sorted({(c.stage, c.block) for c in curves}):
        parts = []
        for axis in AXES:
            scanned = by_key.get((stage, block, axis, VARIANT_SCANNED))
            if scanned is None:
                continue
            dc = float(scanned.response[0])
            share = scanned.skip_gain / (scanned.skip_gain + dc) if dc > 0 else 1.0
            text = (
                f"{axis} scanned {ratio[stage, block, axis, VARIANT_SCANNED]:.3f}, whole "
                f"{ratio[stage, block, axis, VARIANT_SCAN]:.3f} (D share {share:.0%})"
            )
            if (stage, block) in smoothed_blocks:
                text += (
                    ", after the Gaussian: scanned "
                    f"{ratio[stage, block, axis, VARIANT_SCANNED_SMOOTHED]:.3f}"
                )
            parts.append(text)
        lines.append(f"    stage {stage} block {block}: " + "; ".join(parts))
    if any(c.variant == VARIANT_SCANNED and c.skip_gain > 9 * float(c.response[0]) for c in curves):
        lines.append(
            "  D share > 90 %: the skip term passes every frequency alike, so the whole "
            "block is close to all-pass (ratio ~ 1) whatever its scan does."
        )
    return lines


def attention_summary_lines(
    curves: Sequence[ResponseCurve], smoothed_blocks: Sequence[tuple[int, int]] = ()
) -> list[str]:
    """Per attention block: the high/low band ratio and the DC share along each axis."""
    lines = [
        "  high/low band ratio (< 1 means low-pass) and DC share (the response's energy at 0 "
        "cycles per patch: 100 % = uniform attention, 1/n = all-pass) of each block:"
    ]
    by_key = {(c.block, c.axis): c for c in curves}
    for block in sorted({c.block for c in curves}):
        parts = []
        for axis in AXES:
            curve = by_key.get((block, axis))
            if curve is not None:
                parts.append(
                    f"{axis} {band_ratio(curve):.3f} (DC share {curve.dc_share():.0%} of "
                    f"n = {curve.num_cells})"
                )
        smoothed = " (output smoothed)" if (0, block) in set(smoothed_blocks) else ""
        lines.append(f"    block {block}{smoothed}: " + "; ".join(parts))
    return lines
