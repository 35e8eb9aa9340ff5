"""Triton kernels of the selective scan (d_state 1), forward and backward, plain or SS2D-fused.

Structure learnt from fla-org/flash-linear-attention `fla/ops/hgrn/` and proger/accelerated-scan:
one program per (batch item, channel block, direction group) walks the sequence in chunks of
BLOCK_T positions; inside a chunk `tl.associative_scan` solves the linear recurrence
h_t = a_t h_{t-1} + x_t, and the state is carried from chunk to chunk. The forward saves the state
entering every chunk, so the backward recomputes the states of one chunk at a time while it runs
the adjoint recurrence in reverse. Imported only when the `triton` backend runs (TRITON_INTERPRET
is read when the kernels are decorated).

Every tensor is addressed as [batch, direction, position, channel] through explicit strides:
- plain (FUSED = False): the scan's (batch, K * Cd, L) tensors, direction k = channel group.
- fused SS2D (FUSED = True): u and dy are one (batch, H * W, C) map shared by the four
  directions; direction k reads scan step l at map position p_k(l) (0 row-major, 1 column-major,
  2 and 3 the same reversed). y and du are either that map too, the program summing the four
  directions into it one after the other (ACCUMULATE: no atomics, no 4x copy, but only batch x
  channel-block programs), or one map per direction (one program per direction, summed
  afterwards), whichever gives the GPU enough programs.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _combine(a_left, x_left, a_right, x_right):
    # Composition of h -> a h + x maps: the left one first (in reverse scans, the later one).
    return a_left * a_right, x_left * a_right + x_right


@triton.jit
def _softplus(x):
    # torch's softplus (threshold 20); log1p(e) as log(1 + e) * e / ((1 + e) - 1) keeps full
    # relative precision for tiny e (libdevice's log1p is not available in the interpreter).
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _positions(k, steps, length, height, width, FUSED: tl.constexpr):
    """Map position read at scan step `steps` of direction k (identity unless FUSED)."""
    if FUSED:
        along = tl.where(k >= 2, length - 1 - steps, steps)
        return tl.where(k % 2 == 1, (along % height) * width + along // height, along)
    else:
        return steps


@triton.jit
def _row(tile, rows, index):
    """Row `index` of a (BLOCK_T, BLOCK_C) tile as a (BLOCK_C,) vector."""
    return tl.sum(tl.where(rows[:, None] == index, tile, 0.0), axis=0)


@triton.jit
def _decay_and_drive(delta, u, gate_b, A, bias, valid, SOFTPLUS: tl.constexpr):
    """(dt, ds, a, x): dt = delta + bias, ds = softplus(dt), a = exp(ds A), x = ds u B."""
    dt = delta + bias[None, :]
    if SOFTPLUS:
        ds = _softplus(dt)
    else:
        ds = dt
    decay = tl.where(valid, tl.exp(ds * A[None, :]), 1.0)
    drive = tl.where(valid, ds * u * gate_b[:, None], 0.0)
    return dt, ds, decay, drive


@triton.jit
def _channel_parameters(
    A_ptr, bias_ptr, D_ptr, params, col_ok,
    HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """(A, delta_bias, D) of the channels at `params` (zeros for an absent bias or D)."""
    A = tl.load(A_ptr + params, mask=col_ok, other=0.0).to(COMPUTE)
    bias = tl.zeros([BLOCK_C], COMPUTE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + params, mask=col_ok, other=0.0).to(COMPUTE)
    skip = tl.zeros([BLOCK_C], COMPUTE)
    if HAS_D:
        skip = tl.load(D_ptr + params, mask=col_ok, other=0.0).to(COMPUTE)
    return A, bias, skip


@triton.jit
def scan_forward_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, states_ptr,
    length, channels, height, width,
    su_b, su_k, su_p, su_c,
    so_b, so_k, so_p, so_c,
    sd_b, sd_k, sd_p, sd_c,
    sg_b, sg_k, sg_p,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FUSED: tl.constexpr,
    DIRECTIONS: tl.constexpr, ACCUMULATE: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, NUM_CHUNKS: tl.constexpr,
):  # fmt: skip
    """y (float32/64, out strides); states (batch, K, NUM_CHUNKS, channels): h entering chunks."""
    batch = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    group = tl.program_id(2)
    num_directions = tl.num_programs(2) * DIRECTIONS
    cols = block * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < channels
    rows = tl.arange(0, BLOCK_T)
    for kk in tl.static_range(DIRECTIONS):
        k = (group * DIRECTIONS + kk).to(tl.int64)
        params = k * channels + cols
        A, bias, skip = _channel_parameters(
            A_ptr, bias_ptr, D_ptr, params, col_ok, HAS_BIAS, HAS_D, COMPUTE, BLOCK_C
        )
        u_base = u_ptr + batch * su_b + k * su_k + cols[None, :] * su_c
        y_base = y_ptr + batch * so_b + k * so_k + cols[None, :] * so_c
        d_base = delta_ptr + batch * sd_b + k * sd_k + cols[None, :] * sd_c
        g_base = batch * sg_b + k * sg_k
        s_base = states_ptr + ((batch * num_directions + k) * NUM_CHUNKS) * channels + cols
        state = tl.zeros([BLOCK_C], COMPUTE)
        for chunk in range(NUM_CHUNKS):
            steps = chunk * BLOCK_T + rows
            step_ok = steps < length
            valid = step_ok[:, None] & col_ok[None, :]
            pos = _positions(k, steps, length, height, width, FUSED)
            u = tl.load(u_base + pos[:, None] * su_p, mask=valid, other=0.0).to(COMPUTE)
            delta = tl.load(d_base + pos[:, None] * sd_p, mask=valid, other=0.0).to(COMPUTE)
            gate_b = tl.load(B_ptr + g_base + pos * sg_p, mask=step_ok, other=0.0).to(COMPUTE)
            gate_c = tl.load(C_ptr + g_base + pos * sg_p, mask=step_ok, other=0.0).to(COMPUTE)
            _, _, decay, drive = _decay_and_drive(delta, u, gate_b, A, bias, valid, SOFTPLUS)
            tl.store(s_base + chunk * channels, state, mask=col_ok)
            through, local = tl.associative_scan((decay, drive), 0, _combine)
            states = local + through * state[None, :]
            state = _row(states, rows, BLOCK_T - 1)  # padded steps keep the state (a=1, x=0)
            y = states * gate_c[:, None] + skip[None, :] * u
            if ACCUMULATE:
                if kk > 0:
                    y += tl.load(y_base + pos[:, None] * so_p, mask=valid, other=0.0)
            tl.store(y_base + pos[:, None] * so_p, y, mask=valid)
        if ACCUMULATE:
            # The next direction reads (and adds to) map positions other threads wrote.
            tl.debug_barrier()


@triton.jit
def scan_backward_kernel(
    grad_y_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, states_ptr,
    grad_u_ptr, grad_delta_ptr, part_B_ptr, part_C_ptr, part_A_ptr, part_D_ptr, part_bias_ptr,
    length, channels, height, width, batch_size,
    su_b, su_k, su_p, su_c,
    so_b, so_k, so_p, so_c,
    sd_b, sd_k, sd_p, sd_c,
    sg_b, sg_k, sg_p,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FUSED: tl.constexpr,
    DIRECTIONS: tl.constexpr, ACCUMULATE: tl.constexpr, COMPUTE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, NUM_CHUNKS: tl.constexpr,
):  # fmt: skip
    """Gradients of one (batch item, channel block, direction group).

    grad_u like y (float32/64, out strides), grad_delta like delta;
    part_B, part_C: (channel blocks, batch, K, L) sums over this block's channels;
    part_A, part_D, part_bias: (batch, K * channels) sums over positions.
    """
    batch = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    group = tl.program_id(2)
    num_directions = tl.num_programs(2) * DIRECTIONS
    cols = block * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < channels
    rows = tl.arange(0, BLOCK_T)
    for kk in tl.static_range(DIRECTIONS):
        k = (group * DIRECTIONS + kk).to(tl.int64)
        params = k * channels + cols
        A, bias, skip = _channel_parameters(
            A_ptr, bias_ptr, D_ptr, params, col_ok, HAS_BIAS, HAS_D, COMPUTE, BLOCK_C
        )
        x_offset = batch * su_b + k * su_k + cols[None, :] * su_c
        o_offset = batch * so_b + k * so_k + cols[None, :] * so_c
        d_offset = batch * sd_b + k * sd_k + cols[None, :] * sd_c
        g_base = batch * sg_b + k * sg_k
        part_base = (block * batch_size + batch) * num_directions * length + k * length
        s_base = states_ptr + ((batch * num_directions + k) * NUM_CHUNKS) * channels + cols
        adjoint_in = tl.zeros([BLOCK_C], COMPUTE)  # adjoint at the first step of the next chunk
        sum_A = tl.zeros([BLOCK_C], COMPUTE)
        sum_D = tl.zeros([BLOCK_C], COMPUTE)
        sum_bias = tl.zeros([BLOCK_C], COMPUTE)
        for reverse_chunk in range(NUM_CHUNKS):
            chunk = NUM_CHUNKS - 1 - reverse_chunk
            steps = chunk * BLOCK_T + rows
            step_ok = steps < length
            valid = step_ok[:, None] & col_ok[None, :]
            pos = _positions(k, steps, length, height, width, FUSED)
            u = tl.load(u_ptr + x_offset + pos[:, None] * su_p, mask=valid, other=0.0)
            u = u.to(COMPUTE)
            dy = tl.load(grad_y_ptr + x_offset + pos[:, None] * su_p, mask=valid, other=0.0)
            dy = dy.to(COMPUTE)
            delta = tl.load(delta_ptr + d_offset + pos[:, None] * sd_p, mask=valid, other=0.0)
            delta = delta.to(COMPUTE)
            gate_b = tl.load(B_ptr + g_base + pos * sg_p, mask=step_ok, other=0.0).to(COMPUTE)
            gate_c = tl.load(C_ptr + g_base + pos * sg_p, mask=step_ok, other=0.0).to(COMPUTE)
            dt, ds, decay, drive = _decay_and_drive(delta, u, gate_b, A, bias, valid, SOFTPLUS)

            # The adjoint g_t = C_t dy_t + a_{t+1} g_{t+1} needs the next step's decay: read it
            # from memory rather than shifting a tile (0 past the end: nothing comes back).
            next_ok = (steps + 1) < length
            next_valid = next_ok[:, None] & col_ok[None, :]
            next_pos = _positions(k, steps + 1, length, height, width, FUSED)
            next_delta = tl.load(
                delta_ptr + d_offset + next_pos[:, None] * sd_p, mask=next_valid, other=0.0
            ).to(COMPUTE)
            _, _, next_decay, _ = _decay_and_drive(
                next_delta, u, gate_b, A, bias, next_valid, SOFTPLUS
            )
            next_decay = tl.where(next_valid, next_decay, 0.0)

            # States of this chunk from the saved state entering it.
            state_in = tl.load(s_base + chunk * channels, mask=col_ok, other=0.0)
            through, local = tl.associative_scan((decay, drive), 0, _combine)
            states = local + through * state_in[None, :]

            source = tl.where(valid, gate_c[:, None] * dy, 0.0)
            carried, adjoint = tl.associative_scan((next_decay, source), 0, _combine, reverse=True)
            adjoint = adjoint + carried * adjoint_in[None, :]
            adjoint_in = _row(adjoint, rows, 0)

            # d loss / d log a_t = g_t a_t h_{t-1} = g_t (h_t - x_t): no division by a_t.
            grad_log_decay = adjoint * (states - drive)
            grad_ds = grad_log_decay * A[None, :] + adjoint * u * gate_b[:, None]
            if SOFTPLUS:
                grad_dt = tl.where(dt > 20.0, grad_ds, grad_ds * tl.sigmoid(dt))
            else:
                grad_dt = grad_ds
            grad_dt = tl.where(valid, grad_dt, 0.0)
            sum_A += tl.sum(grad_log_decay * ds, axis=0)
            sum_D += tl.sum(dy * u, axis=0)
            sum_bias += tl.sum(grad_dt, axis=0)
            tl.store(grad_delta_ptr + d_offset + pos[:, None] * sd_p, grad_dt, mask=valid)

            grad_drive = adjoint * ds
            tl.store(part_B_ptr + part_base + pos, tl.sum(grad_drive * u, axis=1), mask=step_ok)
            tl.store(part_C_ptr + part_base + pos, tl.sum(dy * states, axis=1), mask=step_ok)
            grad_u = grad_drive * gate_b[:, None] + skip[None, :] * dy
            grad_u_at = grad_u_ptr + o_offset + pos[:, None] * so_p
            if ACCUMULATE:
                if kk > 0:
                    grad_u += tl.load(grad_u_at, mask=valid, other=0.0)
            tl.store(grad_u_at, grad_u, mask=valid)
        sums_at = batch * num_directions * channels + params
        tl.store(part_A_ptr + sums_at, sum_A, mask=col_ok)
        tl.store(part_D_ptr + sums_at, sum_D, mask=col_ok)
        tl.store(part_bias_ptr + sums_at, sum_bias, mask=col_ok)
        if ACCUMULATE:
            tl.debug_barrier()
