"""The backward's chunk kernels on the adjoint recurrence g_t = C_t dy_t + a_{t+1} g_{t+1}:
step 1 (each chunk's adjoint map) and step 3 (the gradients, rebuilding h from the forward's
entering states)."""

from __future__ import annotations

import triton
import triton.language as tl

from lungsrad.models.selective_scan.triton.kernels.common import (
    channel_parameters,
    combine,
    decay_and_drive,
    positions,
    program_tile,
    softplus,
)


@triton.jit
def _next_decay(
    delta_ptr, d_offset, sd_p, A, bias, lane, index, step_ok, col_ok,
    length, height, width,
    REVERSE: tl.constexpr, SOFTPLUS: tl.constexpr, FUSED: tl.constexpr, COMPUTE: tl.constexpr,
):  # fmt: skip
    """a at the next scan step of every step (0 past the sequence's end: nothing comes back),
    read from memory rather than shifting a tile."""
    if REVERSE:
        following = index - 1
    else:
        following = index + 1
    next_ok = step_ok & (following >= 0) & (following < length)
    next_valid = next_ok[:, None] & col_ok[None, :]
    next_pos = positions(lane, following, height, width, FUSED)
    next_delta = tl.load(
        delta_ptr + d_offset + next_pos[:, None] * sd_p, mask=next_valid, other=0.0
    ).to(COMPUTE)
    dt = next_delta + bias[None, :]
    if SOFTPLUS:
        ds = softplus(dt)
    else:
        ds = dt
    return tl.where(next_valid, tl.exp(ds * A[None, :]), 0.0)


@triton.jit
def _direction_adjoint_totals(
    dy, delta_ptr, A_ptr, C_ptr, bias_ptr, total_decay_ptr, total_drive_ptr, total_at,
    batch, lane, direction, index, length, height, width, num_chunks, channels, cols, col_ok,
    rows, pos, step_ok, valid, sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
    REVERSE: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    FUSED: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Stores direction `direction`'s chunk adjoint map on the chunk's first row in scan
    order."""
    k = direction.to(tl.int64)
    params = k * channels + cols
    A = tl.load(A_ptr + params, mask=col_ok, other=0.0).to(COMPUTE)
    bias = tl.zeros([BLOCK_C], COMPUTE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + params, mask=col_ok, other=0.0).to(COMPUTE)
    d_offset = batch * sd_b + k * sd_k + cols[None, :] * sd_c
    gate_c = tl.load(C_ptr + batch * sg_b + k * sg_k + pos * sg_p, mask=step_ok, other=0.0)
    next_decay = _next_decay(
        delta_ptr, d_offset, sd_p, A, bias, lane, index, step_ok, col_ok,
        length, height, width, REVERSE, SOFTPLUS, FUSED, COMPUTE,
    )  # fmt: skip
    source = tl.where(valid, gate_c.to(COMPUTE)[:, None] * dy, 0.0)
    carried, adjoint = tl.associative_scan((next_decay, source), 0, combine, reverse=not REVERSE)
    if REVERSE:
        first = BLOCK_T - 1
    else:
        first = 0
    at = (total_at + k * num_chunks * channels)[None, :] + rows[:, None] * 0
    keep = (rows[:, None] == first) & col_ok[None, :]
    tl.store(total_decay_ptr + at, carried, mask=keep)
    tl.store(total_drive_ptr + at, adjoint, mask=keep)


@triton.jit
def scan_adjoint_totals_kernel(
    grad_y_ptr, delta_ptr, A_ptr, C_ptr, bias_ptr, total_decay_ptr, total_drive_ptr,
    length, channels, height, width, num_chunks, num_lanes,
    su_b, su_k, su_p, su_c,
    sd_b, sd_k, sd_p, sd_c,
    sg_b, sg_k, sg_p,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FUSED: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Backward step 1: each chunk's adjoint map g -> P g + S from a zero adjoint, composed in
    reverse scan order (S: the adjoint at the chunk's first step in scan order)."""
    chunk, block, batch, lane, num_directions, cols, col_ok, rows, index, step_ok, valid, pos = (
        program_tile(length, channels, height, width, num_lanes, FUSED, BLOCK_T, BLOCK_C)
    )
    dy = tl.load(
        grad_y_ptr + batch * su_b + lane * su_k + pos[:, None] * su_p + cols[None, :] * su_c,
        mask=valid,
        other=0.0,
    ).to(COMPUTE)
    total_at = (batch * num_directions * num_chunks + chunk) * channels + cols
    _direction_adjoint_totals(
        dy, delta_ptr, A_ptr, C_ptr, bias_ptr, total_decay_ptr, total_drive_ptr, total_at,
        batch, lane, lane, index, length, height, width, num_chunks, channels, cols, col_ok,
        rows, pos, step_ok, valid, sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
        False, HAS_BIAS, SOFTPLUS, FUSED, COMPUTE, BLOCK_T, BLOCK_C,
    )  # fmt: skip
    if FUSED:
        _direction_adjoint_totals(
            dy, delta_ptr, A_ptr, C_ptr, bias_ptr, total_decay_ptr, total_drive_ptr, total_at,
            batch, lane, lane + num_lanes, index, length, height, width, num_chunks, channels,
            cols, col_ok, rows, pos, step_ok, valid, sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
            True, HAS_BIAS, SOFTPLUS, FUSED, COMPUTE, BLOCK_T, BLOCK_C,
        )  # fmt: skip


@triton.jit
def _direction_gradients(
    u, dy, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, entering_ptr,
    adjoint_entering_ptr, grad_delta_ptr, part_B_ptr, part_C_ptr, part_A_ptr, part_D_ptr,
    part_bias_ptr, state_at, sums_at, part_at,
    batch, lane, direction, index, length, height, width, num_chunks, channels, cols, col_ok,
    pos, step_ok, valid, sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
    REVERSE: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    FUSED: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Direction `direction`'s gradients over the chunk: stores those of delta, the per-chunk
    sums of A, D and delta_bias, the per-block sums of B and C; returns its part of u's."""
    k = direction.to(tl.int64)
    params = k * channels + cols
    A, bias, skip = channel_parameters(
        A_ptr, bias_ptr, D_ptr, params, col_ok, HAS_BIAS, HAS_D, COMPUTE, BLOCK_C
    )
    d_offset = batch * sd_b + k * sd_k + cols[None, :] * sd_c
    delta = tl.load(delta_ptr + d_offset + pos[:, None] * sd_p, mask=valid, other=0.0)
    g_at = batch * sg_b + k * sg_k + pos * sg_p
    gate_b = tl.load(B_ptr + g_at, mask=step_ok, other=0.0).to(COMPUTE)
    gate_c = tl.load(C_ptr + g_at, mask=step_ok, other=0.0).to(COMPUTE)
    dt, ds, decay, drive = decay_and_drive(delta.to(COMPUTE), u, gate_b, A, bias, valid, SOFTPLUS)
    chunk_at = state_at + k * num_chunks * channels
    state_in = tl.load(entering_ptr + chunk_at, mask=col_ok, other=0.0)
    through, local = tl.associative_scan((decay, drive), 0, combine, reverse=REVERSE)
    states = local + through * state_in[None, :]

    next_decay = _next_decay(
        delta_ptr, d_offset, sd_p, A, bias, lane, index, step_ok, col_ok,
        length, height, width, REVERSE, SOFTPLUS, FUSED, COMPUTE,
    )  # fmt: skip
    source = tl.where(valid, gate_c[:, None] * dy, 0.0)
    adjoint_in = tl.load(adjoint_entering_ptr + chunk_at, mask=col_ok, other=0.0)
    carried, adjoint = tl.associative_scan((next_decay, source), 0, combine, reverse=not REVERSE)
    adjoint = adjoint + carried * adjoint_in[None, :]

    # d loss / d log a_t = g_t a_t h_{t-1} = g_t (h_t - x_t): no division by a_t.
    grad_log_decay = adjoint * (states - drive)
    grad_ds = grad_log_decay * A[None, :] + adjoint * u * gate_b[:, None]
    if SOFTPLUS:
        grad_dt = tl.where(dt > 20.0, grad_ds, grad_ds * tl.sigmoid(dt))
    else:
        grad_dt = grad_ds
    grad_dt = tl.where(valid, grad_dt, 0.0)
    tl.store(grad_delta_ptr + d_offset + pos[:, None] * sd_p, grad_dt, mask=valid)
    sums = sums_at + k * channels
    tl.store(part_A_ptr + sums, tl.sum(grad_log_decay * ds, axis=0), mask=col_ok)
    tl.store(part_D_ptr + sums, tl.sum(dy * u, axis=0), mask=col_ok)
    tl.store(part_bias_ptr + sums, tl.sum(grad_dt, axis=0), mask=col_ok)

    grad_drive = adjoint * ds
    gates_at = part_at + k * length
    tl.store(part_B_ptr + gates_at, tl.sum(grad_drive * u, axis=1), mask=step_ok)
    tl.store(part_C_ptr + gates_at, tl.sum(dy * states, axis=1), mask=step_ok)
    return grad_drive * gate_b[:, None] + skip[None, :] * dy


@triton.jit
def scan_chunk_gradient_kernel(
    grad_y_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, entering_ptr,
    adjoint_entering_ptr,
    grad_u_ptr, grad_delta_ptr, part_B_ptr, part_C_ptr, part_A_ptr, part_D_ptr, part_bias_ptr,
    length, channels, height, width, num_chunks, num_lanes, batch_size,
    su_b, su_k, su_p, su_c,
    so_b, so_k, so_p, so_c,
    sd_b, sd_k, sd_p, sd_c,
    sg_b, sg_k, sg_p,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FUSED: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Backward step 3: the gradients of one (chunk, channel block, batch item, lane).

    grad_u like y (FUSED: atomics onto the zeroed map), grad_delta like delta;
    part_B, part_C: (channel blocks, batch, K, L) sums over this block's channels;
    part_A, part_D, part_bias: (chunks, batch, K * channels) sums over the chunk's steps.
    """
    chunk, block, batch, lane, num_directions, cols, col_ok, rows, index, step_ok, valid, pos = (
        program_tile(length, channels, height, width, num_lanes, FUSED, BLOCK_T, BLOCK_C)
    )
    x_offset = batch * su_b + lane * su_k + pos[:, None] * su_p + cols[None, :] * su_c
    u = tl.load(u_ptr + x_offset, mask=valid, other=0.0).to(COMPUTE)
    dy = tl.load(grad_y_ptr + x_offset, mask=valid, other=0.0).to(COMPUTE)
    state_at = (batch * num_directions * num_chunks + chunk) * channels + cols
    sums_at = (chunk * batch_size + batch) * num_directions * channels + cols
    part_at = ((block * batch_size + batch) * num_directions) * length + pos
    grad_u = _direction_gradients(
        u, dy, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, entering_ptr,
        adjoint_entering_ptr, grad_delta_ptr, part_B_ptr, part_C_ptr, part_A_ptr, part_D_ptr,
        part_bias_ptr, state_at, sums_at, part_at,
        batch, lane, lane, index, length, height, width, num_chunks, channels, cols, col_ok,
        pos, step_ok, valid, sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
        False, HAS_D, HAS_BIAS, SOFTPLUS, FUSED, COMPUTE, BLOCK_C,
    )  # fmt: skip
    if FUSED:
        grad_u += _direction_gradients(
            u, dy, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, entering_ptr,
            adjoint_entering_ptr, grad_delta_ptr, part_B_ptr, part_C_ptr, part_A_ptr,
            part_D_ptr, part_bias_ptr, state_at, sums_at, part_at,
            batch, lane, lane + num_lanes, index, length, height, width, num_chunks, channels,
            cols, col_ok, pos, step_ok, valid, sd_b, sd_k, sd_p, sd_c, sg_b, sg_k, sg_p,
            True, HAS_D, HAS_BIAS, SOFTPLUS, FUSED, COMPUTE, BLOCK_C,
        )  # fmt: skip
    grad_u_at = grad_u_ptr + batch * so_b + lane * so_k + pos[:, None] * so_p + cols[None, :] * so_c
    if FUSED:
        tl.atomic_add(grad_u_at, grad_u, mask=valid, sem="relaxed")
    else:
        tl.store(grad_u_at, grad_u, mask=valid)
