"""Spectral response of DASS's SS2D blocks (the analysis of Lung-SRAD Fig. 1/2).

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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lungsrad.config import (
    ExperimentConfig,
    RegularizationConfig,
    atomic_destination,
    write_text_atomic,
)
from lungsrad.errors import UserError
from lungsrad.method.spectral_regularization import (
    attach_spectral_regularization,
    gaussian_kernel1d,
)

# The model's own scan order, so the analysis cannot drift from what the model computes.
from lungsrad.models.dass import DASS, cross_scan

Axis = Literal["time", "freq"]
AXES: tuple[Axis, ...] = ("time", "freq")
# The scan direction whose within-row (time) or within-frame (freq) blocks give each axis.
AXIS_DIRECTION: dict[str, int] = {"time": 0, "freq": 1}
VARIANT_SCAN = "scan"
VARIANT_SMOOTHED = "scan_then_gaussian"
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


def axis_response(inputs: ScanInputs, axis: Axis) -> torch.Tensor:
    """Per-example, per-channel response of one SS2D along one axis.

    Time: direction 0, the W x W diagonal blocks (one per mel row). Frequency: direction 1, the
    H x H diagonal blocks (one per frame). Each block's lag profile is averaged over the rows
    (frames), then transformed.

    Args:
        inputs: operands from `ss2d_scan_inputs`.
        axis: "time" or "freq".

    Returns:
        (B, C, n // 2 + 1) float64 magnitudes, n = W (time) or H (freq).
    """
    direction = AXIS_DIRECTION[axis]
    segments, cells = (
        (inputs.height, inputs.width) if axis == "time" else (inputs.width, inputs.height)
    )
    delta = inputs.delta[:, direction]  # (B, C, L)
    batch, channels, _ = delta.shape
    # A diagonal block of M is the mixing matrix of that block's own segment: S_t - S_s does
    # not depend on where the cumulative sum starts.
    profile = scan_lag_profile(
        delta.reshape(batch, channels, segments, cells),
        inputs.B[:, direction].reshape(batch, 1, segments, cells),
        inputs.C[:, direction].reshape(batch, 1, segments, cells),
        inputs.A[direction].view(1, channels, 1),
        inputs.D[direction].view(1, channels, 1),
    )  # (B, C, segments, cells)
    return lag_response(profile.mean(-2))


# ---------------------------------------------------------------------------------------------
# Whole-model curves


@dataclass(frozen=True)
class ResponseCurve:
    """One block's response along one axis, averaged over channels and examples."""

    stage: int
    block: int
    axis: Axis
    variant: str  # VARIANT_SCAN or VARIANT_SMOOTHED (scan response times the Gaussian's)
    num_cells: int  # n: W for time, H for freq, at this stage's resolution
    cycles_per_cell: np.ndarray  # (n // 2 + 1,) 0 .. 0.5
    response: np.ndarray  # (n // 2 + 1,)


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
    sums: dict[tuple[int, int, Axis], torch.Tensor] = {}
    cells: dict[tuple[int, int, Axis], int] = {}
    captured: dict[tuple[int, int], torch.Tensor] = {}

    def capture(key: tuple[int, int]):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            captured[key] = args[0].detach()

        return hook

    handles = [op.register_forward_hook(capture(key)) for key, op in ops.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for start in range(0, features.shape[0], batch_size):
                captured.clear()
                model(features[start : start + batch_size].to(device=device, dtype=torch.float32))
                for key, op in ops.items():
                    inputs = ss2d_scan_inputs(op, captured[key].cpu())
                    for axis in AXES:
                        response = axis_response(inputs, axis)  # (b, C, bins)
                        total = response.mean(1).sum(0)
                        entry = (*key, axis)
                        sums[entry] = sums.get(entry, 0) + total
                        cells[entry] = inputs.width if axis == "time" else inputs.height
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    smoothed = _smoothed_blocks(model, regularization)
    curves: list[ResponseCurve] = []
    for (stage, index, axis), total in sums.items():
        n = cells[(stage, index, axis)]
        frequencies = torch.fft.rfftfreq(n, dtype=torch.float64).numpy()
        mean = (total / features.shape[0]).numpy()
        curves.append(ResponseCurve(stage, index, axis, VARIANT_SCAN, n, frequencies, mean))
        if (stage, index) in smoothed:
            assert regularization is not None
            gain = gaussian_frequency_response(regularization.kernel_size, regularization.sigma, n)
            curves.append(
                ResponseCurve(
                    stage, index, axis, VARIANT_SMOOTHED, n, frequencies, mean * gain.numpy()
                )
            )
    return curves


# ---------------------------------------------------------------------------------------------
# Outputs


def curves_to_csv(curves: Sequence[ResponseCurve]) -> str:
    """CSV text, one row per curve point: stage, block, axis, variant, num_cells, bin,
    cycles_per_cell, response."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["stage", "block", "axis", "variant", "num_cells", "bin", "cycles_per_cell", "response"]
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
                ]
            )
    return buffer.getvalue()


def plot_curves(
    curves: Sequence[ResponseCurve], path: str | os.PathLike[str], *, title: str
) -> None:
    """Writes a PNG (atomically): rows = time / frequency axis, columns = stages, one line per
    block; dashed lines are the responses after the Gaussian smoothing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stages = sorted({curve.stage for curve in curves})
    figure = Figure(figsize=(4.2 * len(stages), 7.0))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(AXES), len(stages), squeeze=False, sharex=True)
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    for row, axis_name in enumerate(AXES):
        for column, stage in enumerate(stages):
            ax = axes[row][column]
            for curve in curves:
                if curve.axis != axis_name or curve.stage != stage:
                    continue
                smoothed = curve.variant == VARIANT_SMOOTHED
                ax.plot(
                    curve.cycles_per_cell,
                    curve.response,
                    color=palette[curve.block % len(palette)],
                    linestyle="--" if smoothed else "-",
                    label=f"block {curve.block}" + (" + Gaussian" if smoothed else ""),
                )
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_title(f"stage {stage}, {'time' if axis_name == 'time' else 'frequency'} axis")
            if row == len(AXES) - 1:
                ax.set_xlabel("cycles per cell")
            if column == 0:
                ax.set_ylabel("|DFT of lag profile|")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
    figure.suptitle(title)
    # Fixed margins instead of a layout engine: constrained layout draws the figure twice.
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.9, wspace=0.35, hspace=0.3)
    with atomic_destination(path) as tmp_path:
        figure.savefig(tmp_path, format="png", dpi=110)


def _band_ratio(curve: ResponseCurve) -> float:
    """Mean response in the upper half of the band over the lower half (< 1: low-pass)."""
    half = len(curve.response) // 2
    low, high = curve.response[: max(half, 1)], curve.response[max(half, 1) :]
    if len(high) == 0 or low.mean() == 0:
        return float("nan")
    return float(high.mean() / low.mean())


@dataclass
class SpectralSummary:
    """What `run_spectral_analysis` wrote."""

    output_dir: Path
    csv_path: Path
    figure_path: Path
    num_examples: int
    curves: list[ResponseCurve] = field(repr=False)
    smoothed_blocks: list[tuple[int, int]]

    def format_text(self) -> str:
        lines = [
            f"spectral response of {len({(c.stage, c.block) for c in self.curves})} SS2D blocks, "
            f"{self.num_examples} examples (reading: DFT of the lag profile inside rows/frames)",
            f"  CSV: {self.csv_path}",
            f"  figure: {self.figure_path}",
            "  high/low band ratio (< 1 means low-pass):",
        ]
        ratio = {(c.stage, c.block, c.axis, c.variant): _band_ratio(c) for c in self.curves}
        for stage, block in sorted({(c.stage, c.block) for c in self.curves}):
            line = (
                f"    stage {stage} block {block}: "
                f"time {ratio[stage, block, 'time', VARIANT_SCAN]:.3f}, "
                f"freq {ratio[stage, block, 'freq', VARIANT_SCAN]:.3f}"
            )
            if (stage, block) in self.smoothed_blocks:
                line += (
                    "; after the Gaussian: "
                    f"time {ratio[stage, block, 'time', VARIANT_SMOOTHED]:.3f}, "
                    f"freq {ratio[stage, block, 'freq', VARIANT_SMOOTHED]:.3f}"
                )
            lines.append(line)
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
        checkpoint: a lungsrad training checkpoint (`checkpoint.pt`).
        data_root: dataset folder (None: the checkpoint config's data.root).
        output_dir: receives spectral_response.csv and spectral_response.png.
        num_examples: test cycles to average over (spread evenly over the official test split).
        features: (N, T, F) inputs to use instead of the dataset (tests, notebooks).

    Returns:
        A summary with the paths and the curves.
    """
    from lungsrad.models import build_model, load_dass_checkpoint

    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise UserError(f"number of examples must be >= 1, got {num_examples!r}")
    config, state = load_training_checkpoint(checkpoint)
    # The run's init checkpoint (model.checkpoint) is superseded by the trained weights, and
    # may not exist on this machine; any scan backend gives the same operands.
    config = replace(config, model=replace(config.model, checkpoint=None, scan_backend="auto"))
    model = build_model(config)
    load_dass_checkpoint(model, state)
    if features is None:
        features = _example_features(config, data_root, num_examples)
    else:
        features = features[:num_examples].float()
    handles = attach_spectral_regularization(model, config)
    try:
        curves = spectral_response_curves(
            model, features, regularization=config.method.regularization
        )
    finally:
        for handle in handles:
            handle.remove()
    output_dir = Path(output_dir)
    csv_path = output_dir / CSV_NAME
    figure_path = output_dir / FIGURE_NAME
    write_text_atomic(csv_path, curves_to_csv(curves))
    plot_curves(
        curves,
        figure_path,
        title=f"SS2D spectral response: {config.name} ({Path(checkpoint).name})",
    )
    smoothed = sorted(_smoothed_blocks(model, config.method.regularization))
    return SpectralSummary(
        output_dir=output_dir,
        csv_path=csv_path,
        figure_path=figure_path,
        num_examples=int(features.shape[0]),
        curves=curves,
        smoothed_blocks=smoothed,
    )
