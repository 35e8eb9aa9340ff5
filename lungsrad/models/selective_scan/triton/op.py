"""The `triton` backend's op: `lungsrad::triton_scan_forward` / `lungsrad::triton_scan_backward`
registered with `torch.library` (autograd and torch.compile see one opaque op), and the
wrappers `selective_scan_triton` (the reference's signature) and `ss2d_scan_triton` (SS2D's
cross-scan and cross-merge done inside the kernels).
"""

# No `from __future__ import annotations`: torch.library reads the op signatures' annotations.

from typing import Any

import torch

from lungsrad.models.selective_scan.reference import compute_dtype
from lungsrad.models.selective_scan.triton.availability import check_triton_inputs
from lungsrad.models.selective_scan.triton.launch_plan import LaunchConfig, cdiv, default_launch
from lungsrad.models.selective_scan.triton.launches import (
    backward_launches,
    forward_launches,
    geometry,
)


@torch.library.custom_op("lungsrad::triton_scan_forward", mutates_args=())
def triton_scan_forward(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    height: int,
    width: int,
    fused: bool,
    launch: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan of contiguous inputs; returns (y, states entering every chunk).

    Plain: u, delta (batch, K * Cd, L), B, C (batch, K, L), A, D, delta_bias (K * Cd,).
    Fused SS2D (K = 4, L = height * width): u (batch, L, C), delta (4, batch, L, C), B, C
    (batch, 4, L), A, D, delta_bias (4 * C,); y (batch, L, C) sums the four directions.
    y: u's shape, float32 (float64 for float64 input); states: (batch, K, chunks, Cd).
    launch: `LaunchConfig.as_ints()`.
    """
    launches, y, entering = forward_launches(
        u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, fused,
        LaunchConfig(*launch),
    )  # fmt: skip
    for kernel_launch in launches:
        kernel_launch.run()
    return y, entering


@triton_scan_forward.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, fused, launch):
    batch, directions, channels, length = geometry(u, B, fused)
    dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
    num_chunks = cdiv(length, launch[0])
    return (
        u.new_empty(u.shape, dtype=dtype),
        u.new_empty((batch, directions, num_chunks, channels), dtype=dtype),
    )


@torch.library.custom_op("lungsrad::triton_scan_backward", mutates_args=())
def triton_scan_backward(
    grad_y: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    states: torch.Tensor,
    delta_softplus: bool,
    height: int,
    width: int,
    fused: bool,
    launch: list[int],
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """Gradients (u, delta, A, B, C, D, delta_bias) of `triton_scan_forward`'s y; grad_y is
    contiguous like y. u's gradient is in the compute dtype, delta's in delta's dtype, the others
    in the compute dtype (D's and delta_bias's are sums even when D / delta_bias are None)."""
    launches, buffers = backward_launches(
        grad_y, u, delta, A, B, C, D, delta_bias, states, delta_softplus, height, width, fused,
        LaunchConfig(*launch),
    )  # fmt: skip
    for kernel_launch in launches:
        kernel_launch.run()
    grad_u, grad_delta, part_A, part_B, part_C, part_D, part_bias = buffers
    return (
        grad_u,
        grad_delta,
        part_A.sum((0, 1)),
        part_B.sum(0),
        part_C.sum(0),
        part_D.sum((0, 1)),
        part_bias.sum((0, 1)),
    )


@triton_scan_backward.register_fake
def _(grad_y, u, delta, A, B, C, D, delta_bias, states, *_options):
    parameters = u.new_empty(A.shape, dtype=states.dtype)
    gates = u.new_empty(B.shape, dtype=states.dtype)
    return (
        u.new_empty(u.shape, dtype=states.dtype),
        torch.empty_like(delta),
        parameters,
        gates,
        torch.empty_like(gates),
        torch.empty_like(parameters),
        torch.empty_like(parameters),
    )


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    u, delta, A, B, C, D, delta_bias, *options = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, output[1])
    ctx.options = options


def _backward(ctx: Any, grad_y: torch.Tensor, _grad_states: Any) -> tuple:
    u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
    grads = triton_scan_backward(
        grad_y.contiguous(), u, delta, A, B, C, D, delta_bias, states, *ctx.options
    )
    grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, grad_bias = grads
    return (
        grad_u.to(u.dtype),
        grad_delta,
        grad_A.to(A.dtype),
        grad_B.to(B.dtype),
        grad_C.to(C.dtype),
        grad_D.to(D.dtype) if D is not None else None,
        grad_bias.to(delta_bias.dtype) if delta_bias is not None else None,
        *([None] * len(ctx.options)),
    )


triton_scan_forward.register_autograd(_backward, setup_context=_setup_context)


def _vector(x: torch.Tensor | None) -> torch.Tensor | None:
    return x.reshape(-1).contiguous() if x is not None else None


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    *,
    launch: LaunchConfig | None = None,
) -> torch.Tensor:
    """Selective scan with the Triton kernels; same maths and shapes as the reference, N = 1.

    Args:
        u: (batch, channels, L) CUDA tensor (CPU under the interpreter), float32 / float16 /
            bfloat16 / float64.
        delta: (batch, channels, L), before bias and softplus.
        A: (channels, 1).
        B: (batch, groups, 1, L) or (batch, 1, L).
        C: like B.
        D: (channels,) or None.
        delta_bias: (channels,) or None.
        delta_softplus: apply softplus to delta + delta_bias.
        launch: tiles and warps; None: `default_launch`'s.

    Returns:
        (batch, channels, L): float64 for float64 input, otherwise float32.
    """
    check_triton_inputs(u, A)
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    batch, total, length = u.shape
    groups = B.shape[1]
    launch = launch or default_launch(
        batch, total // groups, length, directions=groups, fused=False, device=u.device
    )
    y, _ = triton_scan_forward(
        u.contiguous(),
        delta.contiguous(),
        _vector(A),
        B[:, :, 0].contiguous(),
        C[:, :, 0].contiguous(),
        _vector(D),
        _vector(delta_bias),
        delta_softplus,
        0,
        0,
        False,
        launch.as_ints(),
    )
    return y


def ss2d_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    *,
    height: int,
    width: int,
    delta_softplus: bool = True,
    launch: LaunchConfig | None = None,
) -> torch.Tensor:
    """SS2D's four-direction scan of a map, cross-scan and cross-merge done by the kernels.

    Equals `cross_merge(selective_scan(cross_scan(map), ...))` when every input is given in
    natural (row-major map) order: direction k reads them at its own scan order.

    Args:
        u: (batch, L = height * width, C), the map channels-last.
        delta: (4, batch, L, C), before bias and softplus.
        A: (4 * C, 1) or (4 * C,); direction k uses rows k * C ... k * C + C - 1, like D and
            delta_bias.
        B: (batch, 4, L) input gates per direction.
        C: (batch, 4, L) output gates.
        D: (4 * C,) or None.
        delta_bias: (4 * C,) or None.
        height: H of the map (frequency), width: W (time).
        delta_softplus: apply softplus to delta + delta_bias.
        launch: tiles and warps; None: `default_launch`'s.

    Returns:
        (batch, L, C): the four directions summed, float64 for float64 input, else float32.
    """
    check_triton_inputs(u, A)
    y, _ = triton_scan_forward(
        *ss2d_scan_arguments(
            u, delta, A, B, C, D, delta_bias, height=height, width=width,
            delta_softplus=delta_softplus, launch=launch,
        )
    )  # fmt: skip
    return y


def ss2d_scan_arguments(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    *,
    height: int,
    width: int,
    delta_softplus: bool = True,
    launch: LaunchConfig | None = None,
) -> tuple:
    """The positional arguments `ss2d_scan_triton` gives `triton_scan_forward` (contiguous
    inputs, flat parameters, the launch plan); works on any device, the meta device included."""
    batch, length, channels = u.shape
    if length != height * width or delta.shape != (4, batch, length, channels):
        raise ValueError(
            f"ss2d_scan_triton: u (batch, {height} x {width}, C) and delta (4, batch, L, C) "
            f"expected, got {tuple(u.shape)} and {tuple(delta.shape)}"
        )
    launch = launch or default_launch(
        batch, channels, length, directions=4, fused=True, device=u.device
    )
    return (
        u.contiguous(),
        delta.contiguous(),
        _vector(A),
        B.contiguous(),
        C.contiguous(),
        _vector(D),
        _vector(delta_bias),
        delta_softplus,
        height,
        width,
        True,
        launch.as_ints(),
    )
