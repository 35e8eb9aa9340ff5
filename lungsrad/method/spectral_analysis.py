"""Spectral response of DASS's SS2D blocks (the analysis of Lung-SRAD Fig. 1/2), and the driver
of `lungsrad spectral` for both backbones (AST's attention side: attention_analysis.py), with the
side-by-side figure of two checkpoints (Fig. 1).

Each SS2D scan direction is y = M u with an input-dependent lower-triangular mixing matrix M
(shared/dass_reference/ARCHITECTURE.md section 11). The response per frequency band is the
1-D DFT of M's lag profile (reading (b) there): the transfer function of the best
shift-invariant approximation of M. It is taken inside one mel row along time (direction 0,
row-major scan) and inside one frame along frequency (direction 1, column-major scan), so a lag
is always a step along one axis and never a jump to the next row or frame. Reading (b) was
chosen over (a) (the diagonal of F M F^H / L) because it needs only the W x W (or H x H)
diagonal blocks, never an L x L matrix, and because it is directly comparable with the
Gaussian: a convolution's lag profile is its kernel, so its transfer function multiplies the
scan's on the same frequency grid.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungsrad.config import (
    ExperimentConfig,
    RegularizationConfig,
    atomic_destination,
    expected_num_frames,
    model_input_frames,
    write_text_atomic,
)
from lungsrad.errors import UserError
from lungsrad.method.spectral_regularization import (
    attach_spectral_regularization,
    gaussian_kernel1d,
)

# The model's own scan order, so the analysis cannot drift from what the model computes.
from lungsrad.models.dass import DASS, cross_scan

K = TypeVar("K")  # keys of the modules whose inputs `captured_inputs` yields

Axis = Literal["time", "freq"]
AXES: tuple[Axis, ...] = ("time", "freq")
# The scan direction whose within-row (time) or within-frame (freq) blocks give each axis.
AXIS_DIRECTION: dict[str, int] = {"time": 0, "freq": 1}
VARIANT_SCAN = "scan"  # the whole block: scanned part + skip term D
VARIANT_SMOOTHED = "scan_then_gaussian"
VARIANT_SCANNED = "scanned_part"  # the scan without its skip term (D = 0)
VARIANT_SCANNED_SMOOTHED = "scanned_part_then_gaussian"
DB_FLOOR = -40.0  # lowest level drawn, dB relative to the response at 0 cycles per patch
PATCH_EMBED_STRIDE = 4  # input cells (frames, mel bins) per stage-0 patch; x2 per later stage
CSV_NAME = "spectral_response.csv"
FIGURE_NAME = "spectral_response.png"


# ---------------------------------------------------------------------------------------------
# SS2D internals (ARCHITECTURE.md section 4.2, steps 1 to 6)


@dataclass(frozen=True)
class ScanInputs:
    """The selective-scan operands of one SS2D call, per direction k in its own scan order.

    Attributes:
        u: (B, 4, C, L) cross-scanned scan inputs (post-SiLU depthwise conv features).
        delta: (B, 4, C, L) softplus(dt + dt_projs_bias).
        B: (B, 4, L) input gains (d_state 1, shared by the C channels of a direction).
        C: (B, 4, L) output gains.
        A: (4, C) negative decay rates, -exp(A_logs).
        D: (4, C) skip gains.
        height: H (frequency cells); width: W (time cells); L = H * W.
    """

    u: torch.Tensor
    delta: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    A: torch.Tensor
    D: torch.Tensor
    height: int
    width: int


def ss2d_scan_inputs(
    op: nn.Module, h: torch.Tensor, *, dtype: torch.dtype = torch.float64
) -> ScanInputs:
    """Recomputes the scan operands of an SS2D ("v05_noz", d_state 1) from its own parameters.

    Args:
        op: the block's SS2D (`in_proj`, `conv2d`, `x_proj_weight`, `dt_projs_weight`,
            `dt_projs_bias`, `A_logs`, `Ds`, named as in the release checkpoint).
        h: (B, C, H, W) the SS2D input (the block's `norm` output).
        dtype: computation dtype (float64 for the analysis).

    Returns:
        The operands; a scan with them reproduces the op's per-direction outputs.
    """
    weights = {name: tensor.detach().to(dtype) for name, tensor in op.named_parameters()}
    missing = [
        name
        for name in (
            "in_proj.weight",
            "conv2d.weight",
            "x_proj_weight",
            "dt_projs_weight",
            "dt_projs_bias",
            "A_logs",
            "Ds",
        )
        if name not in weights
    ]
    if missing:
        raise ValueError(f"module {type(op).__name__} is not a DASS SS2D: no {', '.join(missing)}")
    x = h.detach().to(dtype)
    batch, channels, height, width = x.shape
    in_weight = weights["in_proj.weight"]
    u = torch.einsum("oc,bchw->bohw", in_weight.reshape(in_weight.shape[0], -1), x)
    if "in_proj.bias" in weights:
        u = u + weights["in_proj.bias"].view(1, -1, 1, 1)
    conv = op.conv2d
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"module {type(op).__name__} is not a DASS SS2D: conv2d is not a Conv2d")
    u = F.conv2d(
        u,
        weights["conv2d.weight"],
        weights.get("conv2d.bias"),
        padding=conv.padding,
        groups=conv.groups,
    )
    u = F.silu(u)
    inner = u.shape[1]
    x_proj = weights["x_proj_weight"]  # (4, R + 2N, C)
    rank = weights["dt_projs_weight"].shape[-1]
    if x_proj.shape[1] != rank + 2:
        raise ValueError(
            "spectral analysis supports d_state 1 only; x_proj_weight has shape "
            f"{tuple(x_proj.shape)}"
        )
    xs = cross_scan(u)  # (B, 4, C, L)
    projected = torch.einsum("krc,bkcl->bkrl", x_proj, xs)
    dt = torch.einsum("kcr,bkrl->bkcl", weights["dt_projs_weight"], projected[:, :, :rank])
    delta = F.softplus(dt + weights["dt_projs_bias"].view(1, 4, inner, 1))
    return ScanInputs(
        u=xs,
        delta=delta,
        B=projected[:, :, rank],
        C=projected[:, :, rank + 1],
        A=-torch.exp(weights["A_logs"].view(4, inner)),
        D=weights["Ds"].view(4, inner),
        height=height,
        width=width,
    )


# ---------------------------------------------------------------------------------------------
# Mixing matrices and their response


def mixing_matrix(
    delta: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    A: torch.Tensor | float,
    D: torch.Tensor | float,
) -> torch.Tensor:
    """The lower-triangular matrix M with y = M u for a d_state-1 selective scan.

    M[t, s] = C_t exp(A (S_t - S_s)) delta_s B_s for s <= t, 0 above the diagonal, plus D on the
    diagonal, with S the cumulative sum of delta (computed in float64; the upper triangle is
    masked before exp so it cannot overflow).

    Args:
        delta: (..., L) step sizes (after softplus).
        B: (..., L) input gains, broadcastable to delta.
        C: (..., L) output gains, broadcastable to delta.
        A: (...) decay rate (negative), broadcastable to delta's leading dims.
        D: (...) skip gain, same.

    Returns:
        (..., L, L) float64.
    """
    delta = delta.to(torch.float64)
    A = torch.as_tensor(A, dtype=torch.float64, device=delta.device)
    D = torch.as_tensor(D, dtype=torch.float64, device=delta.device)
    length = delta.shape[-1]
    cumulative = delta.cumsum(-1)
    difference = cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2)  # [t, s] = S_t - S_s
    causal = torch.ones(length, length, dtype=torch.bool, device=delta.device).tril()
    decay = torch.exp(A[..., None, None] * difference.masked_fill(~causal, 0.0))
    decay = decay.masked_fill(~causal, 0.0)
    gains_in = (delta * B.to(torch.float64)).unsqueeze(-2)
    matrix = C.to(torch.float64).unsqueeze(-1) * decay * gains_in
    eye = torch.eye(length, dtype=torch.float64, device=delta.device)
    return matrix + D[..., None, None] * eye


def lag_profile(matrices: torch.Tensor) -> torch.Tensor:
    """Mean of each subdiagonal: k[tau] = mean over t >= tau of M[t, t - tau].

    Args:
        matrices: (..., n, n) lower-triangular.

    Returns:
        (..., n) lags 0..n-1.
    """
    n = matrices.shape[-1]
    rows = torch.arange(n, device=matrices.device).view(n, 1)
    lags = torch.arange(n, device=matrices.device).view(1, n)
    columns = (rows - lags).clamp(min=0)  # [t, tau] -> t - tau
    gathered = matrices.gather(-1, columns.expand(*matrices.shape[:-2], n, n))
    valid = (rows >= lags).to(matrices.dtype)
    counts = torch.arange(n, 0, -1, dtype=matrices.dtype, device=matrices.device)
    return (gathered * valid).sum(-2) / counts


def lag_response(profile: torch.Tensor) -> torch.Tensor:
    """Magnitude of the n-point DFT of a causal lag profile, bins 0..n//2.

    Args:
        profile: (..., n).

    Returns:
        (..., n // 2 + 1) at frequencies `torch.fft.rfftfreq(n)` (cycles per cell).
    """
    return torch.fft.rfft(profile, dim=-1).abs()


def gaussian_frequency_response(kernel_size: int, sigma: float, num_cells: int) -> torch.Tensor:
    """|G(f)| of the centred, L1-normalised Gaussian at `rfftfreq(num_cells)` (float64).

    The kernel is symmetric, so G(f) = sum_j g_j cos(2 pi f (j - k // 2)) is real; G(0) = 1.
    """
    kernel = gaussian_kernel1d(kernel_size, sigma).to(torch.float64)
    offsets = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    frequencies = torch.fft.rfftfreq(num_cells, dtype=torch.float64)
    phase = 2 * math.pi * frequencies.view(-1, 1) * offsets.view(1, -1)
    return (torch.cos(phase) * kernel).sum(-1).abs()


def scan_lag_profile(
    delta: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    A: torch.Tensor | float,
    D: torch.Tensor | float,
) -> torch.Tensor:
    """`lag_profile(mixing_matrix(delta, B, C, A, D))` without forming the matrix.

    Walks the subdiagonals: the decay over lag tau ending at t is the product of the per-step
    decays exp(A delta_r), r = t - tau + 1..t, so each lag multiplies the previous lag's decays
    by one more step (values in (0, 1], no exp and no overflow in the loop). Memory stays O(L)
    per sequence; on DASS-small's stage 0 this is many times faster than the matrix route.
    Arguments broadcast as in `mixing_matrix`.

    Returns:
        (..., L) float64, lags 0..L-1.
    """
    delta = delta.to(torch.float64)
    A = torch.as_tensor(A, dtype=torch.float64, device=delta.device).unsqueeze(-1)
    D = torch.as_tensor(D, dtype=torch.float64, device=delta.device)
    gain_out = C.to(torch.float64)
    drive = delta * B.to(torch.float64)
    step = torch.exp(A * delta)
    length = delta.shape[-1]
    decay = torch.ones_like(step)  # decay[..., i]: from position i to position i + lag
    profile = []
    for lag in range(length):
        if lag:
            decay = decay[..., : length - lag].mul(step[..., lag:])
        term = drive[..., : length - lag].mul(decay).mul_(gain_out[..., lag:])
        profile.append(term.sum(-1).div_(length - lag))
    result = torch.stack(profile, dim=-1)
    result[..., 0] += D
    return result


def axis_responses(inputs: ScanInputs, axis: Axis) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example, per-channel response of one SS2D along one axis: the whole block's (scan
    plus skip term D) and the scanned part's alone (D = 0).

    Time: direction 0, the W x W diagonal blocks (one per mel row). Frequency: direction 1, the
    H x H diagonal blocks (one per frame). Each block's lag profile is averaged over the rows
    (frames), then transformed. D only adds to lag 0, so it lifts every frequency alike: a
    block whose D outweighs its scan is close to all-pass whatever the scan does.

    Args:
        inputs: operands from `ss2d_scan_inputs`.
        axis: "time" or "freq".

    Returns:
        (whole, scanned), each (B, C, n // 2 + 1) float64 magnitudes, n = W (time) or H (freq).
    """
    direction = AXIS_DIRECTION[axis]
    segments, cells = (
        (inputs.height, inputs.width) if axis == "time" else (inputs.width, inputs.height)
    )
    delta = inputs.delta[:, direction]  # (B, C, L)
    batch, channels, _ = delta.shape
    # A diagonal block of M is the mixing matrix of that block's own segment: S_t - S_s does
    # not depend on where the cumulative sum starts.
    scanned = scan_lag_profile(
        delta.reshape(batch, channels, segments, cells),
        inputs.B[:, direction].reshape(batch, 1, segments, cells),
        inputs.C[:, direction].reshape(batch, 1, segments, cells),
        inputs.A[direction].view(1, channels, 1),
        0.0,
    ).mean(-2)  # (B, C, cells)
    whole = scanned.clone()
    whole[..., 0] += inputs.D[direction].view(1, channels).to(whole.dtype)
    return lag_response(whole), lag_response(scanned)


def axis_response(inputs: ScanInputs, axis: Axis) -> torch.Tensor:
    """The whole block's response of `axis_responses` (scan plus skip term)."""
    return axis_responses(inputs, axis)[0]


# ---------------------------------------------------------------------------------------------
# Whole-model curves


@dataclass(frozen=True)
class ResponseCurve:
    """One block's response along one axis, averaged over channels and examples."""

    stage: int
    block: int
    axis: Axis
    variant: str  # VARIANT_*: whole block or scanned part, before or after the Gaussian
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


def _ss2d_of(block: nn.Module) -> nn.Module:
    op = getattr(block, "op", None)
    if not isinstance(op, nn.Module):
        raise ValueError(f"block {type(block).__name__} has no SS2D submodule 'op'")
    return op


def _smoothed_blocks(
    model: DASS, regularization: RegularizationConfig | None
) -> set[tuple[int, int]]:
    if regularization is None or not regularization.enabled:
        return set()
    depth = tuple(model.depths)[regularization.stage]
    blocks = range(depth) if regularization.blocks == "all" else regularization.blocks
    return {(regularization.stage, index) for index in blocks}


def captured_inputs(
    model: nn.Module, features: torch.Tensor, modules: Mapping[K, nn.Module], *, batch_size: int
) -> Iterator[dict[K, torch.Tensor]]:
    """Runs the model over `features` (N, frames, mel_bins) in batches, in eval mode without
    gradients, and yields per batch the input each of `modules` received; the model's mode is
    restored and the hooks removed afterwards."""
    captured: dict[K, torch.Tensor] = {}

    def capture(key: K):
        def hook(module: nn.Module, args: tuple) -> None:
            captured[key] = args[0].detach()

        return hook

    handles = [module.register_forward_pre_hook(capture(k)) for k, module in modules.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, features.shape[0], batch_size):
                captured.clear()
                model(features[start : start + batch_size].to(device=device, dtype=torch.float32))
                yield dict(captured)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def spectral_response_curves(
    model: DASS,
    features: torch.Tensor,
    *,
    regularization: RegularizationConfig | None = None,
    batch_size: int = 1,
) -> list[ResponseCurve]:
    """Spectral responses of every SS2D block of a DASS on some inputs.

    The model runs as given (attach the spectral regularization hooks first if the run used
    them, so later blocks see smoothed inputs); each block's SS2D input is captured with a
    forward hook and the analysis is redone in float64 from the SS2D's parameters.

    Args:
        model: a DASS (`depths`, `block(stage, index).op`).
        features: (N, T, F) fbank inputs.
        regularization: when enabled, its blocks also get a VARIANT_SMOOTHED curve: the scan
            response times |G(f)| of the Gaussian along the same axis (the smoothing acts on the
            block output, so on the same grid its transfer function multiplies the spectrum).
        batch_size: examples per forward pass.

    Returns:
        Curves ordered by stage, block, axis, variant; responses are the mean over examples and
        channels of |DFT(lag profile)|.
    """
    if features.dim() != 3 or features.shape[0] < 1:
        raise ValueError(
            f"features must be (N >= 1, frames, mel_bins), got {tuple(features.shape)}"
        )
    depths = tuple(model.depths)
    ops = {
        (stage, index): _ss2d_of(model.block(stage, index))
        for stage, depth in enumerate(depths)
        for index in range(depth)
    }
    sums: dict[tuple[int, int, Axis, str], torch.Tensor] = {}
    cells: dict[tuple[int, int, Axis], int] = {}
    skips: dict[tuple[int, int, Axis], float] = {}
    for captured in captured_inputs(model, features, ops, batch_size=batch_size):
        for key, op in ops.items():
            inputs = ss2d_scan_inputs(op, captured[key].cpu())
            for axis in AXES:
                whole, scanned = axis_responses(inputs, axis)  # (b, C, bins) each
                for variant, response in ((VARIANT_SCAN, whole), (VARIANT_SCANNED, scanned)):
                    entry = (*key, axis, variant)
                    sums[entry] = sums.get(entry, 0) + response.mean(1).sum(0)
                cells[(*key, axis)] = inputs.width if axis == "time" else inputs.height
                skips[(*key, axis)] = float(inputs.D[AXIS_DIRECTION[axis]].abs().mean())
    smoothed = _smoothed_blocks(model, regularization)
    after = {VARIANT_SCAN: VARIANT_SMOOTHED, VARIANT_SCANNED: VARIANT_SCANNED_SMOOTHED}
    curves: list[ResponseCurve] = []
    for (stage, index, axis, variant), total in sums.items():
        n = cells[(stage, index, axis)]
        skip = skips[(stage, index, axis)]
        frequencies = torch.fft.rfftfreq(n, dtype=torch.float64).numpy()
        mean = (total / features.shape[0]).numpy()
        curves.append(ResponseCurve(stage, index, axis, variant, n, frequencies, mean, skip))
        if (stage, index) in smoothed:
            assert regularization is not None
            gain = gaussian_frequency_response(regularization.kernel_size, regularization.sigma, n)
            curves.append(
                ResponseCurve(
                    stage, index, axis, after[variant], n, frequencies, mean * gain.numpy(), skip
                )
            )
    return curves


# ---------------------------------------------------------------------------------------------
# Outputs


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


def _model_frame_ms(config: ExperimentConfig) -> float:
    """Milliseconds one frame of the model's input spans (data.model_frames stretches them)."""
    data = config.data
    return data.frame_shift_ms * expected_num_frames(data) / model_input_frames(data)


def patch_spans(config: ExperimentConfig, stages: Sequence[int]) -> dict[tuple[int, str], str]:
    """What one patch (cell) of each stage spans: along time in milliseconds, along frequency
    in mel bins (the patch embedding takes 4 x 4 input cells, each later stage halves the grid).
    """
    spans: dict[tuple[int, str], str] = {}
    for stage in stages:
        factor = PATCH_EMBED_STRIDE * 2**stage
        spans[(stage, "time")] = f"1 patch = {factor * _model_frame_ms(config):.4g} ms"
        spans[(stage, "freq")] = f"1 patch = {factor} of {config.data.num_mel_bins} mel bins"
    return spans


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
        curves: from `spectral_response_curves`.
        path: the PNG.
        title: figure title.
        spans: (stage, axis) -> what one patch spans ("1 patch = 40 ms"), for the x labels.
        gaussian: (kernel_size, sigma) of the smoothing, to draw its response.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    stages = sorted({curve.stage for curve in curves})
    figure = Figure(figsize=(4.6 * len(stages), 8.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(AXES), len(stages), squeeze=False, sharey="row")
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
    styles = {
        VARIANT_SCANNED: ("-", 1.6),
        VARIANT_SCANNED_SMOOTHED: ("--", 1.6),
        VARIANT_SCAN: (":", 1.0),
    }
    for row, axis_name in enumerate(AXES):
        lowest, highest = 0.0, 0.0
        for column, stage in enumerate(stages):
            ax = axes[row][column]
            here = [c for c in curves if c.axis == axis_name and c.stage == stage]
            for curve in here:
                if curve.variant not in styles:
                    continue
                linestyle, width = styles[curve.variant]
                level = curve.relative_db()
                lowest = min(lowest, float(level.min()))
                highest = max(highest, float(level.max()))
                ax.plot(
                    curve.cycles_per_cell,
                    level,
                    color=f"C{curve.block % 10}",
                    linestyle=linestyle,
                    linewidth=width,
                    marker=markers[curve.block % len(markers)] if linestyle == "-" else None,
                    markersize=4,
                    label=f"block {curve.block}" if curve.variant == VARIANT_SCANNED else None,
                )
            smoothed_here = any(c.variant == VARIANT_SCANNED_SMOOTHED for c in here)
            if gaussian is not None and smoothed_here:
                # On a fine grid: the Gaussian is a continuous response (the curves above are
                # sampled at the stage's patch grid).
                fine = 256
                gain = gaussian_frequency_response(gaussian[0], gaussian[1], fine).numpy()
                with np.errstate(divide="ignore"):
                    level = np.maximum(20 * np.log10(np.maximum(gain, 1e-300)), DB_FLOOR)
                ax.plot(
                    np.fft.rfftfreq(fine), level, color="0.5", linewidth=2.5, alpha=0.5, zorder=0
                )
            scanned = [c for c in here if c.variant == VARIANT_SCANNED]
            if scanned:
                ax.text(
                    0.02, 0.02, _skip_note(scanned), transform=ax.transAxes, fontsize=6.5,
                    va="bottom", ha="left", family="monospace",
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
                )  # fmt: skip
            name = "time" if axis_name == "time" else "frequency"
            smoothed_text = " (smoothed)" if smoothed_here else ""
            ax.set_title(f"stage {stage}, {name} axis{smoothed_text}", fontsize=9)
            span = (spans or {}).get((stage, axis_name))
            ax.set_xlabel(f"cycles per patch ({span})" if span else "cycles per patch", fontsize=8)
            if column == 0:
                ax.set_ylabel(f"{name}: dB re. 0 cycles/patch", fontsize=8)
            ax.set_xlim(0, 0.5)
            ax.grid(True, alpha=0.3)
            if scanned:
                ax.legend(fontsize=6.5, loc="upper right")
        axes[row][0].set_ylim(max(DB_FLOOR, lowest) - 2, max(highest, 0.0) + 4)
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
    figure.suptitle(
        f"{title}\n|DFT of each block's lag profile|, averaged over channels and examples; "
        "0.5 cycles per patch = a period of 2 patches",
        fontsize=10,
    )
    # Fixed margins instead of a layout engine: constrained layout draws the figure twice.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.11, top=0.88, wspace=0.12, hspace=0.38)
    with atomic_destination(path) as tmp_path:
        figure.savefig(tmp_path, format="png", dpi=110)


def _band_ratio(curve: ResponseCurve) -> float:
    """Mean response in the upper half of the band over the lower half (< 1: low-pass)."""
    half = len(curve.response) // 2
    low, high = curve.response[: max(half, 1)], curve.response[max(half, 1) :]
    if len(high) == 0 or low.mean() == 0:
        return float("nan")
    return float(high.mean() / low.mean())


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
                    f"{axis} {_band_ratio(curve):.3f} (DC share {curve.dc_share():.0%} of "
                    f"n = {curve.num_cells})"
                )
        smoothed = " (output smoothed)" if (0, block) in set(smoothed_blocks) else ""
        lines.append(f"    block {block}{smoothed}: " + "; ".join(parts))
    return lines


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
        """The paths and, per block, how low-pass its scanned part is and how much the skip
        term D flattens the whole block (AST: how low-pass each block's attention is)."""
        if self.backbone == "ast":
            return "\n".join(
                [
                    f"spectral response of {len({c.block for c in self.curves})} AST attention "
                    f"blocks, {self.num_examples} examples (reading: circulant part of the "
                    "within-row / within-column patch attention)",
                    f"  CSV: {self.csv_path}",
                    f"  figure: {self.figure_path}",
                    *attention_summary_lines(self.curves, self.smoothed_blocks),
                ]
            )
        lines = [
            f"spectral response of {len({(c.stage, c.block) for c in self.curves})} SS2D blocks, "
            f"{self.num_examples} examples (reading: DFT of the lag profile inside rows/frames)",
            f"  CSV: {self.csv_path}",
            f"  figure: {self.figure_path}",
            "  high/low band ratio (< 1 means low-pass) of the scanned part (skip D removed) and "
            "of the whole block (scan + D); D share = |D| / (|D| + scanned response at 0):",
        ]
        by_key = {(c.stage, c.block, c.axis, c.variant): c for c in self.curves}
        ratio = {key: _band_ratio(curve) for key, curve in by_key.items()}
        for stage, block in sorted({(c.stage, c.block) for c in self.curves}):
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
                if (stage, block) in self.smoothed_blocks:
                    text += (
                        ", after the Gaussian: scanned "
                        f"{ratio[stage, block, axis, VARIANT_SCANNED_SMOOTHED]:.3f}"
                    )
                parts.append(text)
            lines.append(f"    stage {stage} block {block}: " + "; ".join(parts))
        if any(
            c.variant == VARIANT_SCANNED and c.skip_gain > 9 * float(c.response[0])
            for c in self.curves
        ):
            lines.append(
                "  D share > 90 %: the skip term passes every frequency alike, so the whole "
                "block is close to all-pass (ratio ~ 1) whatever its scan does."
            )
        return "\n".join(lines)


def load_training_checkpoint(path: str | os.PathLike[str]) -> tuple[ExperimentConfig, dict]:
    """Reads a lungsrad training checkpoint: (its config, the checkpoint dict)."""
    import yaml

    from lungsrad.checkpoint_format import read_checkpoint
    from lungsrad.config import config_from_dict

    path = Path(path)
    checkpoint = read_checkpoint(path)
    try:
        config = config_from_dict(yaml.safe_load(checkpoint["config"]) or {})
    except (KeyError, ValueError, yaml.YAMLError) as error:
        raise UserError(f"{path}: the stored config is not usable ({error})") from None
    return config, checkpoint


def _example_features(
    config: ExperimentConfig, data_root: str | os.PathLike[str] | None, count: int
):
    from lungsrad.data.features import build_feature_set

    if data_root is None and config.data.root is None:
        raise UserError("no dataset: pass --data DIR (data.root is not set in the checkpoint)")
    feature_set = build_feature_set(config.data, data_root, show_progress=False)
    test = [i for i, split in enumerate(feature_set.official_split) if split == "test"]
    pool = test or list(range(len(feature_set.labels)))
    picks = sorted(
        set(np.linspace(0, len(pool) - 1, num=min(count, len(pool))).round().astype(int))
    )
    return feature_set.features[[pool[i] for i in picks]].float()


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
    """Builds a training checkpoint's model (its `model.backbone`) and measures every block.

    DASS: the SS2D responses of `spectral_response_curves`; AST: the attention responses of
    `attention_analysis.attention_response_curves`. The run's spectral regularization hooks are
    attached while measuring, so later blocks see the smoothed maps the run trained with.
    """
    from lungsrad.data.features import resize_frames
    from lungsrad.method.attention_analysis import attention_response_curves
    from lungsrad.models import build_model, load_ast_checkpoint, load_dass_checkpoint

    _check_num_examples(num_examples)
    config, state = load_training_checkpoint(checkpoint)
    # The run's init checkpoint (model.checkpoint) is superseded by the trained weights, and
    # may not exist on this machine; any scan backend gives the same operands.
    config = replace(config, model=replace(config.model, checkpoint=None, scan_backend="auto"))
    model = build_model(config)
    if config.model.backbone == "ast":
        load_ast_checkpoint(model, state)
    else:
        load_dass_checkpoint(model, state)
    if features is None:
        features = _example_features(config, data_root, num_examples)
    else:
        features = features[:num_examples].float()
    # The frames the run's model saw (training and evaluation resize to data.model_frames).
    features = resize_frames(features, config.data.model_frames)
    handles = attach_spectral_regularization(model, config)
    try:
        if config.model.backbone == "ast":
            curves = attention_response_curves(model, features)
        else:
            curves = spectral_response_curves(
                model, features, regularization=config.method.regularization
            )
    finally:
        for handle in handles:
            handle.remove()
    return CheckpointResponse(
        checkpoint=Path(checkpoint),
        config=config,
        curves=curves,
        num_examples=int(features.shape[0]),
        smoothed_blocks=sorted(_smoothed_blocks(model, config.method.regularization)),
        spans=_axis_spans(config, model),
    )


def _axis_spans(config: ExperimentConfig, model: Any) -> dict[str, str]:
    """What one step of the model's patch grid spans along each axis, for the x labels."""
    if config.model.backbone == "ast":
        freq_stride, time_stride = model.patch_stride
        return {
            "time": f"1 patch step = {time_stride * _model_frame_ms(config):.4g} ms",
            "freq": f"1 patch step = {freq_stride} of {config.data.num_mel_bins} mel bins",
        }
    stage0 = patch_spans(config, [0])
    return {axis: f"{stage0[(0, axis)]} at stage 0, x2 per stage" for axis in AXES}


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
    config, curves = measured.config, measured.curves
    output_dir = Path(output_dir)
    csv_path = output_dir / CSV_NAME
    figure_path = output_dir / FIGURE_NAME
    write_text_atomic(csv_path, curves_to_csv(curves))
    regularization = config.method.regularization
    if measured.backbone == "ast":
        plot_comparison(
            [measured],
            figure_path,
            title=f"AST attention spectral response: {config.name} ({Path(checkpoint).name})",
        )
    else:
        plot_curves(
            curves,
            figure_path,
            title=f"SS2D spectral response: {config.name} ({Path(checkpoint).name})",
            spans=patch_spans(config, sorted({curve.stage for curve in curves})),
            gaussian=(
                (regularization.kernel_size, regularization.sigma)
                if regularization.enabled
                else None
            ),
        )
    return SpectralSummary(
        output_dir=output_dir,
        csv_path=csv_path,
        figure_path=figure_path,
        num_examples=measured.num_examples,
        curves=curves,
        smoothed_blocks=measured.smoothed_blocks,
        backbone=measured.backbone,
    )


# ---------------------------------------------------------------------------------------------
# Two checkpoints side by side (Fig. 1: AST's attention against DASS's SS2D)

# The curve of each backbone that is its token-mixing operator as a whole: the attention matrix,
# and the SS2D mixing matrix with its skip term D (the blocks' residual paths excluded in both).
COMPARED_VARIANTS = ("attention", VARIANT_SCAN)
COMPARE_CSV_NAME = "spectral_compare.csv"
COMPARE_FIGURE_NAME = "spectral_compare.png"


def _compared_curves(measured: CheckpointResponse) -> list[ResponseCurve]:
    curves = [c for c in measured.curves if c.variant in COMPARED_VARIANTS]
    return sorted(curves, key=lambda c: (c.stage, c.block))


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
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    colormap = matplotlib.colormaps["viridis"]
    columns = len(measured)
    figure = Figure(figsize=(5.6 * columns + 0.8, 8.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(AXES), columns, squeeze=False, sharey="row")
    for row, axis_name in enumerate(AXES):
        lowest, highest = 0.0, 0.0
        for column, item in enumerate(measured):
            ax = axes[row][column]
            curves = [c for c in _compared_curves(item) if c.axis == axis_name]
            order = sorted({(c.stage, c.block) for c in curves})
            scale = Normalize(0, max(len(order) - 1, 1))
            # DASS's skip term D can flatten its whole operator; its scanned part (D removed)
            # is drawn dashed beside it, as the DASS figure does.
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
            name = "time" if axis_name == "time" else "frequency"
            spans = item.spans
            ax.set_title(f"{item.label}\n{name} axis", fontsize=9)
            ax.set_xlabel(f"cycles per patch ({spans[axis_name]})", fontsize=8)
            if column == 0:
                ax.set_ylabel(f"{name}: dB re. 0 cycles/patch", fontsize=9)
            ax.set_xlim(0, 0.5)
            ax.grid(True, alpha=0.3)
            stages = len({stage for stage, _ in order})
            names = [f"s{s} b{b}" if stages > 1 else f"block {b}" for s, b in order]
            bar = figure.colorbar(
                ScalarMappable(norm=scale, cmap=colormap), ax=ax, pad=0.02, fraction=0.05
            )
            ticks = sorted({0, len(order) // 2, len(order) - 1})
            bar.set_ticks(ticks, labels=[names[t] for t in ticks], fontsize=7)
            bar.set_label("depth", fontsize=7)
        axes[row][0].set_ylim(max(DB_FLOOR, lowest) - 2, max(highest, 0.0) + 3)
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
    figure.suptitle(
        f"{title}\nAST: |DFT| of the attention's circulant part (patch to patch); DASS: |DFT| of "
        "the SS2D lag profile (scan + skip D); mean over heads / channels and examples",
        fontsize=9,
    )
    figure.subplots_adjust(left=0.07, right=0.95, bottom=0.11, top=0.86, wspace=0.28, hspace=0.45)
    with atomic_destination(path) as tmp_path:
        figure.savefig(tmp_path, format="png", dpi=110)


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
        for item in self.measured:
            parts = []
            for axis in AXES:
                curves = [c for c in _compared_curves(item) if c.axis == axis]
                ratio = float(np.nanmean([_band_ratio(c) for c in curves]))
                share = float(np.mean([c.dc_share() for c in curves]))
                text = f"{axis} {ratio:.3f} (DC share {share:.0%})"
                scanned = [
                    c for c in item.curves if c.variant == VARIANT_SCANNED and c.axis == axis
                ]
                if scanned:
                    mean = float(np.nanmean([_band_ratio(c) for c in scanned]))
                    text += f", scanned part {mean:.3f}"
                parts.append(text)
            lines.append(f"    {item.label}, {len(curves)} blocks: " + "; ".join(parts))
        return "\n".join(lines)


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
    parts = []
    for index, item in enumerate(measured):
        header, *rows = curves_to_csv(item.curves).splitlines()
        if index == 0:
            parts.append("model," + header)
        label = item.label.replace('"', "'")
        parts += [f'"{label}",{row}' for row in rows]
    write_text_atomic(csv_path, "\n".join(parts) + "\n")
    plot_comparison(
        measured,
        figure_path,
        title="Spectral response per block: "
        + " vs ".join(item.backbone.upper() for item in measured),
    )
    return ComparisonSummary(csv_path=csv_path, figure_path=figure_path, measured=measured)
