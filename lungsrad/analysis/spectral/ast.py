"""Spectral response of AST's self-attention along time and frequency (AST's side of Fig. 1).

A block's attention is a token-mixing matrix y = A v over the patch grid. Along one axis (inside
one frequency row for time, inside one time column for frequency) its n x n diagonal block is
read through its best circulant approximation (T. Chan's optimal circulant: the mean of each
wrapped diagonal, c[tau] = mean_t A[t, (t - tau) mod n]); the response is |DFT_n(c)|, i.e. the
diagonal of F A F^H / n (reading (a) of dass.py's docstring). Attention is not causal, so the
lag axis wraps instead of stopping at the sequence start as DASS's causal lag profile does; on
this reading uniform attention is pure DC and the identity is all-pass, exactly.
"""

from __future__ import annotations

import torch

from lungsrad.analysis.spectral.capture import captured_inputs
from lungsrad.analysis.spectral.curves import AXES, Axis, ResponseCurve, model_frame_ms
from lungsrad.config import ExperimentConfig
from lungsrad.models import AST

VARIANT_ATTENTION = "attention"  # ResponseCurve.variant of an attention block's response


def circulant_lag_profile(matrices: torch.Tensor) -> torch.Tensor:
    """Mean of each wrapped diagonal: c[tau] = mean over t of M[t, (t - tau) mod n].

    Args:
        matrices: (..., n, n), rows the outputs (queries), columns the inputs (keys).

    Returns:
        (..., n) lags 0..n-1 (lag n - k is lag -k).
    """
    n = matrices.shape[-1]
    rows = torch.arange(n, device=matrices.device).view(n, 1)
    lags = torch.arange(n, device=matrices.device).view(1, n)
    columns = (rows - lags) % n  # [t, tau] -> (t - tau) mod n
    return matrices.gather(-1, columns.expand(*matrices.shape[:-2], n, n)).mean(-2)


def axis_blocks(attention: torch.Tensor, grid: tuple[int, int], axis: Axis) -> torch.Tensor:
    """The within-row (time) or within-column (frequency) blocks of patch-to-patch attention.

    Args:
        attention: (B, heads, 2 + F * T, 2 + F * T) softmax attention; tokens [cls, dist,
            patch (f, t) at 2 + f * T + t]. Attention to and from cls / dist is left out.
        grid: (F, T).
        axis: "time" (T x T blocks, one per frequency row) or "freq" (F x F, one per time column).

    Returns:
        (B, heads, F, T, T) for time, (B, heads, T, F, F) for frequency.
    """
    freq, time = grid
    batch, heads, length, _ = attention.shape
    prefix = length - freq * time
    assert prefix >= 0 and attention.shape[-1] == length, (tuple(attention.shape), grid)
    patches = attention[..., prefix:, prefix:].reshape(batch, heads, freq, time, freq, time)
    if axis == "time":
        return patches.diagonal(dim1=2, dim2=4).permute(0, 1, 4, 2, 3)  # same row f
    return patches.diagonal(dim1=3, dim2=5).permute(0, 1, 4, 2, 3)  # same column t


def attention_axis_response(
    attention: torch.Tensor, grid: tuple[int, int], axis: Axis
) -> torch.Tensor:
    """Per-example, per-head response of one attention matrix along one axis.

    The circulant lag profile of each row's (column's) block is averaged over the rows
    (columns), then transformed: |DFT_n|, bins 0..n//2 (n = T for time, F for frequency), at
    `torch.fft.rfftfreq(n)` cycles per patch.

    Returns:
        (B, heads, n // 2 + 1) float64.
    """
    blocks = axis_blocks(attention.detach().to(torch.float64), grid, axis)
    profile = circulant_lag_profile(blocks).mean(-2)  # (B, heads, n)
    return torch.fft.rfft(profile, dim=-1).abs()


def attention_response_curves(
    model: AST, features: torch.Tensor, *, batch_size: int = 1
) -> list[ResponseCurve]:
    """The attention response of every AST block along time and frequency.

    The model runs as given (attach the spectral regularization hooks first if the run used
    them: each block's input is captured with a forward pre-hook, so later blocks see smoothed
    tokens); the block's attention is then recomputed explicitly from that input
    (`Block.forward_with_attention`, the same maths as its fused forward).

    Args:
        model: an AST (`blocks`, `block(0, index)`, `grid_shape`).
        features: (N, frames, mel_bins) fbank inputs.
        batch_size: examples per forward pass (AST-base: about 0.5 GB of matrices per example).

    Returns:
        Curves ordered by block then axis (stage 0, variant VARIANT_ATTENTION): the mean over
        examples and heads of each block's response.
    """
    if features.dim() != 3 or features.shape[0] < 1:
        raise ValueError(
            f"features must be (N >= 1, frames, mel_bins), got {tuple(features.shape)}"
        )
    blocks = [model.block(0, index) for index in range(model.depth)]
    sums: dict[tuple[int, Axis], torch.Tensor] = {}
    by_index = dict(enumerate(blocks))
    for captured in captured_inputs(model, features, by_index, batch_size=batch_size):
        for index, block in enumerate(blocks):
            attention = block.forward_with_attention(captured[index])[1].cpu()
            for axis in AXES:
                response = attention_axis_response(attention, model.grid_shape, axis)
                sums[(index, axis)] = sums.get((index, axis), 0) + response.mean(1).sum(0)
            del attention
    freq, time = model.grid_shape
    curves = []
    for (index, axis), total in sums.items():
        n = time if axis == "time" else freq
        curves.append(
            ResponseCurve(
                stage=0,
                block=index,
                axis=axis,
                variant=VARIANT_ATTENTION,
                num_cells=n,
                cycles_per_cell=torch.fft.rfftfreq(n, dtype=torch.float64).numpy(),
                response=(total / features.shape[0]).numpy(),
            )
        )
    return curves


def axis_spans(config: ExperimentConfig, model: AST) -> dict[str, str]:
    """What one step of the patch grid spans along each axis, for the x labels."""
    freq_stride, time_stride = model.patch_stride
    return {
        "time": f"1 patch step = {time_stride * model_frame_ms(config):.4g} ms",
        "freq": f"1 patch step = {freq_stride} of {config.data.num_mel_bins} mel bins",
    }
