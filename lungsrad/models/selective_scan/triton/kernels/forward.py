"""The forward's chunk kernels: step 1 (each chunk's map from a zero state) and step 3 (the
output from each chunk's entering state)."""

from __future__ import annotations

import triton
import triton.language as tl

from lungsrad.models.selective_scan.triton.kernels.common import (
    channel_parameters,
    combine,
    decay_and_drive,
    program_tile,
)


@triton.jit
def _direction_totals(
    u, delta_ptr, A_ptr, B_ptr, bias_ptr, total_decay_ptr, total_drive_ptr, total_at,
    batch, direction, num_chunks, channels, cols, col_ok, rows, pos, step_ok, valid,
    sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
    REVERSE: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Stores direction `direction`'s chunk map (P, S) on the chunk's last row in scan order."""
    k = direction.to(tl.int64)
    params = k * channels + cols
    A = tl.load(A_ptr + params, mask=col_ok, other=0.0).to(COMPUTE)
    bias = tl.zeros([BLOCK_C], COMPUTE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + params, mask=col_ok, other=0.0).to(COMPUTE)
    d_offset = batch * sd_b + k * sd_k + cols[None, :] * sd_c
    delta = tl.load(delta_ptr + d_offset + pos[:, None] * sd_p, mask=valid, other=0.0)
    gate_b = tl.load(B_ptr + batch * sg_b + k * sg_k + pos * sg_p, mask=step_ok, other=0.0)
    _, _, decay, drive = decay_and_drive(
        delta.to(COMPUTE), u, gate_b.to(COMPUTE), A, bias, valid, SOFTPLUS
    )
    through, local = tl.associative_scan((decay, drive), 0, combine, reverse=REVERSE)
    if REVERSE:
        last = 0
    else:
        last = BLOCK_T - 1
    at = (total_at + k * num_chunks * channels)[None, :] + rows[:, None] * 0
    keep = (rows[:, None] == last) & col_ok[None, :]
    tl.store(total_decay_ptr + at, through, mask=keep)
    tl.store(total_drive_ptr + at, local, mask=keep)


@triton.jit
def scan_chunk_totals_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr, total_decay_ptr, total_drive_ptr,
    length, channels, height, width, num_chunks, num_lanes,
    su_b, su_k, su_p, su_c,
    sd_b, sd_k, sd_p, sd_c,
    sg_b, sg_k, sg_p,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FUSED: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Forward step 1: each chunk's map h -> P h + S from a zero state, in scan order.

    total_decay (P), total_drive (S): (batch, K, chunks, channels), indexed by the chunk's place
    in the sequence (not in scan order).
    """
    chunk, block, batch, lane, num_directions, cols, col_ok, rows, index, step_ok, valid, pos = (
        program_tile(length, channels, height, width, num_lanes, FUSED, BLOCK_T, BLOCK_C)
    )
    u = tl.load(
        u_ptr + batch * su_b + lane * su_k + pos[:, None] * su_p + cols[None, :] * su_c,
        mask=valid,
        other=0.0,
    ).to(COMPUTE)
    total_at = (batch * num_directions * num_chunks + chunk) * channels + cols
    _direction_totals(
        u, delta_ptr, A_ptr, B_ptr, bias_ptr, total_decay_ptr, total_drive_ptr, total_at,
        batch, lane, num_chunks, channels, cols, col_ok, rows, pos, step_ok, valid,
        sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
        False, HAS_BIAS, SOFTPLUS, COMPUTE, BLOCK_T, BLOCK_C,
    )  # fmt: skip
    if FUSED:
        _direction_totals(
            u, delta_ptr, A_ptr, B_ptr, bias_ptr, total_decay_ptr, total_drive_ptr, total_at,
            batch, lane + num_lanes, num_chunks, channels, cols, col_ok, rows, pos, step_ok,
            valid, sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
            True, HAS_BIAS, SOFTPLUS, COMPUTE, BLOCK_T, BLOCK_C,
        )  # fmt: skip


@triton.jit
def _direction_output(
    u, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, entering_ptr, state_at,
    batch, direction, num_chunks, channels, cols, col_ok, pos, step_ok, valid,
    sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
    REVERSE: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """C h + D u of direction `direction` over the chunk, from its entering state."""
    k = direction.to(tl.int64)
    A, bias, skip = channel_parameters(
        A_ptr, bias_ptr, D_ptr, k * channels + cols, col_ok, HAS_BIAS, HAS_D, COMPUTE, BLOCK_C
    )
    d_offset = batch * sd_b + k * sd_k + cols[None, :] * sd_c
    delta = tl.load(delta_ptr + d_offset + pos[:, None] * sd_p, mask=valid, other=0.0)
    g_at = batch * sg_b + k * sg_k + pos * sg_p
    gate_b = tl.load(B_ptr + g_at, mask=step_ok, other=0.0).to(COMPUTE)
    gate_c = tl.load(C_ptr + g_at, mask=step_ok, other=0.0).to(COMPUTE)
    _, _, decay, drive = decay_and_drive(delta.to(COMPUTE), u, gate_b, A, bias, valid, SOFTPLUS)
    state_in = tl.load(entering_ptr + state_at + k * num_chunks * channels, mask=col_ok, other=0.0)
    through, local = tl.associative_scan((decay, drive), 0, combine, reverse=REVERSE)
    states = local + through * state_in[None, :]
    return states * gate_c[:, None] + skip[None, :] * u


@triton.jit
def scan_chunk_output_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, entering_ptr, y_ptr,
    length, channels, height, width, num_chunks, num_lanes,
    su_b, su_k, su_p, su_c,
    so_b, so_k, so_p, so_c,
    sd_b, sd_k, sd_p, sd_c,
    sg_b, sg_k, sg_p,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FUSED: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Forward step 3: y = C h + D u of each chunk from its entering state.

    y: float32/64 at the out strides; FUSED: the zeroed (batch, L, C) map, each lane adding the
    sum of its two directions (atomics), otherwise stored.
    """
    chunk, block, batch, lane, num_directions, cols, col_ok, rows, index, step_ok, valid, pos = (
        program_tile(length, channels, height, width, num_lanes, FUSED, BLOCK_T, BLOCK_C)
    )
    u = tl.load(
        u_ptr + batch * su_b + lane * su_k + pos[:, None] * su_p + cols[None, :] * su_c,
        mask=valid,
        other=0.0,
    ).to(COMPUTE)
    state_at = (batch * num_directions * num_chunks + chunk) * channels + cols
    y = _direction_output(
        u, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, entering_ptr, state_at,
        batch, lane, num_chunks, channels, cols, col_ok, pos, step_ok, valid,
        sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
        False, HAS_D, HAS_BIAS, SOFTPLUS, COMPUTE, BLOCK_C,
    )  # fmt: skip
    if FUSED:
        y += _direction_output(
            u, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, entering_ptr, state_at,
            batch, lane + num_lanes, num_chunks, channels, cols, col_ok, pos, step_ok, valid,
            sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
            True, HAS_D, HAS_BIAS, SOFTPLUS, COMPUTE, BLOCK_C,
        )  # fmt: skip
    y_at = y_ptr + batch * so_b + lane * so_k + pos[:, None] * so_p + cols[None, :] * so_c
    if FUSED:
        tl.atomic_add(y_at, y, mask=valid, sem="relaxed")
    else:
        tl.store(y_at, y, mask=valid)
