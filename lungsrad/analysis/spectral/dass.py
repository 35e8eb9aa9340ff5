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
scan's on the same frequency grid. The matrix route itself is in dass_reference.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lungsrad.analysis.spectral.capture import captured_inputs
from lungsrad.analysis.spectral.curves import (
    AXES,
    Axis,
    ResponseCurve,
    model_frame_ms,
    smoothed_blocks,
)
from lungsrad.config import ExperimentConfig, RegularizationConfig
from lungsrad.method.spectral_regularization import gaussian_kernel1d

# The model's own scan order, so the analysis cannot drift from what the model computes.
from lungsrad.models.dass import DASS, cross_scan

# The scan direction whose within-row (time) or within-frame (freq) blocks give each axis.
AXIS_DIRECTION: dict[str, int] = {"time": 0, "freq": 1}
VARIANT_SCAN = "scan"  # the whole block: scanned part + skip term D
VARIANT_SMOOTHED = "scan_then_gaussian"
VARIANT_SCANNED = "scanned_part"  # the scan without its skip term (D = 0)
VARIANT_SCANNED_SMOOTHED = "scanned_part_then_gaussian"
PATCH_EMBED_STRIDE = 4  # input cells (frames, mel bins) per stage-0 patch; x2 per later stage


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
# The lag profile's response (the matrix route to the same numbers: dass_reference.py)


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
    """`lag_profile(mixing_matrix(delta, B, C, A, D))` of dass_reference.py, without the matrix.

    Walks the subdiagonals: the decay over lag tau ending at t is the product of the per-step
    decays exp(A delta_r), r = t - tau + 1..t, so each lag multiplies the previous lag's decays
    by one more step (values in (0, 1], no exp and no overflow in the loop). Memory stays O(L)
    per sequence; on DASS-small's stage 0 this is many times faster than the matrix route.
    Arguments broadcast as in `dass_reference.mixing_matrix`.

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


# ---------------------------------------------------------------------------------------------
# Whole-model curves


def _ss2d_of(block: nn.Module) -> nn.Module:
    op = getattr(block, "op", None)
    if not isinstance(op, nn.Module):
        raise ValueError(f"block {type(block).__name__} has no SS2D submodule 'op'")
    return op


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
    smoothed = smoothed_blocks(model, regularization)
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


def patch_spans(config: ExperimentConfig, stages: Sequence[int]) -> dict[tuple[int, str], str]:
    """What one patch (cell) of each stage spans: along time in milliseconds, along frequency
    in mel bins (the patch embedding takes 4 x 4 input cells, each later stage halves the grid).
    """
    spans: dict[tuple[int, str], str] = {}
    for stage in stages:
        factor = PATCH_EMBED_STRIDE * 2**stage
        spans[(stage, "time")] = f"1 patch = {factor * model_frame_ms(config):.4g} ms"
        spans[(stage, "freq")] = f"1 patch = {factor} of {config.data.num_mel_bins} mel bins"
    return spans


def axis_spans(config: ExperimentConfig, model: DASS) -> dict[str, str]:
    """What one cell of the stage-0 grid spans along each axis, for the x labels."""
    stage0 = patch_spans(config, [0])
    return {axis: f"{stage0[(0, axis)]} at stage 0, x2 per stage" for axis in AXES}
