"""Triton kernels of the selective scan (d_state 1), forward and backward, plain or SS2D-fused.

Chunk-parallel, after fla-org/flash-linear-attention `fla/ops/hgrn/` (chunk kernels) and
proger/accelerated-scan: the sequence is cut into chunks of BLOCK_T steps, and every
(chunk, channel block, batch item, lane) is its own program. A pass runs in three launches:
1. totals: each program scans its chunk from a zero state (`tl.associative_scan` solves
   h_t = a_t h_{t-1} + x_t) and stores the chunk's map h -> P h + S (P, S per channel);
2. carry: one light program per (channel block, batch item, direction) scans those maps over
   the chunks and stores the state entering every chunk;
3. output (or gradients): each program rescans its chunk from its entering state.
The backward runs the same three steps on the adjoint recurrence g_t = C_t dy_t + a_{t+1} g_{t+1}
(in reverse scan order), using the forward's entering states to rebuild h.

Every tensor is addressed as [batch, direction, position, channel] through explicit strides:
- plain (FUSED = False): the scan's (batch, K * Cd, L) tensors, direction k = channel group; a
  lane is one direction.
- fused SS2D (FUSED = True): u and dy are one (batch, H * W, C) map shared by the four
  directions. Lane p (0 row-major, 1 column-major) scans index i at map position
  pos_p(i) and holds two directions: k = p forward in i and k = p + 2 backward in i (the
  reversed orders), so both read the same chunk of map positions. The lane sums its two
  directions' outputs in registers and adds them to the zeroed output map with float32/64
  atomics: two addends per element onto zero, so the result does not depend on their order.
Imported only when the `triton` backend runs (TRITON_INTERPRET is read when the kernels are
decorated).
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
def _positions(lane, index, height, width, FUSED: tl.constexpr):
    """Map position of scan index `index` in lane `lane` (identity unless FUSED; lane 1 reads
    the map column-major)."""
    if FUSED:
        return tl.where(lane == 1, (index % height) * width + index // height, index)
    else:
        return index


@triton.jit
def _program_tile(
    length, channels, height, width, num_lanes,
    FUSED: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Where a chunk program works: (chunk, channel block, batch item, lane, directions K,
    channels, their mask, tile rows, scan indices, their mask, the tile's mask, map positions)."""
    chunk = tl.program_id(0)
    block = tl.program_id(1)
    batch = (tl.program_id(2) // num_lanes).to(tl.int64)
    lane = tl.program_id(2) % num_lanes
    num_directions = num_lanes * (2 if FUSED else 1)
    cols = block * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < channels
    rows = tl.arange(0, BLOCK_T)
    index = chunk * BLOCK_T + rows
    step_ok = index < length
    valid = step_ok[:, None] & col_ok[None, :]
    pos = _positions(lane, index, height, width, FUSED)
    return chunk, block, batch, lane, num_directions, cols, col_ok, rows, index, step_ok, valid, pos


@triton.jit
def _row(tile, rows, index):
    """Row `index` of a (rows, BLOCK_C) tile as a (BLOCK_C,) vector."""
    return tl.sum(tl.where(rows[:, None] == index, tile, 0.0), axis=0)


@triton.jit
def _decay_and_drive(delta, u, gate_b, A, bias, valid, SOFTPLUS: tl.constexpr):
    """(dt, ds, a, x): dt = delta + bias, ds = softplus(dt), a = exp(ds A), x = ds u B; a = 1 and
    x = 0 outside `valid` (the identity map)."""
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
    next_pos = _positions(lane, following, height, width, FUSED)
    next_delta = tl.load(
        delta_ptr + d_offset + next_pos[:, None] * sd_p, mask=next_valid, other=0.0
    ).to(COMPUTE)
    dt = next_delta + bias[None, :]
    if SOFTPLUS:
        ds = _softplus(dt)
    else:
        ds = dt
    return tl.where(next_valid, tl.exp(ds * A[None, :]), 0.0)


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
    _, _, decay, drive = _decay_and_drive(
        delta.to(COMPUTE), u, gate_b.to(COMPUTE), A, bias, valid, SOFTPLUS
    )
    through, local = tl.associative_scan((decay, drive), 0, _combine, reverse=REVERSE)
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
        _program_tile(length, channels, height, width, num_lanes, FUSED, BLOCK_T, BLOCK_C)
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
def scan_chunk_carry_kernel(
    total_decay_ptr, total_drive_ptr, entering_ptr,
    channels, num_lanes,
    FUSED: tl.constexpr, ADJOINT: tl.constexpr, NUM_CHUNKS: tl.constexpr,
    COMPUTE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Step 2: the state entering every chunk, from the chunks' maps (P, S).

    All three tensors are (batch, K, NUM_CHUNKS, channels). The maps are composed in scan order
    (ADJOINT: in reverse scan order, for the adjoint recurrence), BLOCK_N chunks at a time; the
    first chunk in that order is entered with 0.
    """
    block = tl.program_id(0)
    sequence = tl.program_id(1).to(tl.int64)  # batch * K + k
    PER_LANE: tl.constexpr = 2 if FUSED else 1
    k = sequence % (num_lanes * PER_LANE)
    if FUSED:
        reversed_scan = k >= num_lanes  # directions 2 and 3 run backwards in the index
    else:
        reversed_scan = k < 0
    descending = reversed_scan != ADJOINT
    cols = block * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < channels
    base = sequence * NUM_CHUNKS * channels + cols
    first = tl.where(descending, NUM_CHUNKS - 1, 0)
    tl.store(entering_ptr + base + first * channels, tl.zeros([BLOCK_C], COMPUTE), mask=col_ok)
    steps = tl.arange(0, BLOCK_N)
    state = tl.zeros([BLOCK_C], COMPUTE)
    for start in range(0, NUM_CHUNKS, BLOCK_N):
        order = start + steps  # place in the composition order
        ok = (order < NUM_CHUNKS)[:, None] & col_ok[None, :]
        chunk = tl.where(descending, NUM_CHUNKS - 1 - order, order)
        at = base[None, :] + chunk[:, None] * channels
        decay = tl.load(total_decay_ptr + at, mask=ok, other=1.0).to(COMPUTE)
        drive = tl.load(total_drive_ptr + at, mask=ok, other=0.0).to(COMPUTE)
        through, local = tl.associative_scan((decay, drive), 0, _combine)
        leaving = local + through * state[None, :]  # state after each chunk
        following = tl.where(descending, chunk - 1, chunk + 1)
        follows_ok = ok & ((order + 1) < NUM_CHUNKS)[:, None]
        tl.store(entering_ptr + base[None, :] + following[:, None] * channels, leaving,
                 mask=follows_ok)  # fmt: skip
        state = _row(leaving, steps, BLOCK_N - 1)  # padded chunks are identities


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
    A, bias, skip = _channel_parameters(
        A_ptr, bias_ptr, D_ptr, k * channels + cols, col_ok, HAS_BIAS, HAS_D, COMPUTE, BLOCK_C
    )
    d_offset = batch * sd_b + k * sd_k + cols[None, :] * sd_c
    delta = tl.load(delta_ptr + d_offset + pos[:, None] * sd_p, mask=valid, other=0.0)
    g_at = batch * sg_b + k * sg_k + pos * sg_p
    gate_b = tl.load(B_ptr + g_at, mask=step_ok, other=0.0).to(COMPUTE)
    gate_c = tl.load(C_ptr + g_at, mask=step_ok, other=0.0).to(COMPUTE)
    _, _, decay, drive = _decay_and_drive(delta.to(COMPUTE), u, gate_b, A, bias, valid, SOFTPLUS)
    state_in = tl.load(entering_ptr + state_at + k * num_chunks * channels, mask=col_ok, other=0.0)
    through, local = tl.associative_scan((decay, drive), 0, _combine, reverse=REVERSE)
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
        _program_tile(length, channels, height, width, num_lanes, FUSED, BLOCK_T, BLOCK_C)
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
    carried, adjoint = tl.associative_scan((next_decay, source), 0, _combine, reverse=not REVERSE)
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
        _program_tile(length, channels, height, width, num_lanes, FUSED, BLOCK_T, BLOCK_C)
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
    A, bias, skip = _channel_parameters(
        A_ptr, bias_ptr, D_ptr, params, col_ok, HAS_BIAS, HAS_D, COMPUTE, BLOCK_C
    )
    d_offset = batch * sd_b + k * sd_k + cols[None, :] * sd_c
    delta = tl.load(delta_ptr + d_offset + pos[:, None] * sd_p, mask=valid, other=0.0)
    g_at = batch * sg_b + k * sg_k + pos * sg_p
    gate_b = tl.load(B_ptr + g_at, mask=step_ok, other=0.0).to(COMPUTE)
    gate_c = tl.load(C_ptr + g_at, mask=step_ok, other=0.0).to(COMPUTE)
    dt, ds, decay, drive = _decay_and_drive(delta.to(COMPUTE), u, gate_b, A, bias, valid, SOFTPLUS)
    chunk_at = state_at + k * num_chunks * channels
    state_in = tl.load(entering_ptr + chunk_at, mask=col_ok, other=0.0)
    through, local = tl.associative_scan((decay, drive), 0, _combine, reverse=REVERSE)
    states = local + through * state_in[None, :]

    next_decay = _next_decay(
        delta_ptr, d_offset, sd_p, A, bias, lane, index, step_ok, col_ok,
        length, height, width, REVERSE, SOFTPLUS, FUSED, COMPUTE,
    )  # fmt: skip
    source = tl.where(valid, gate_c[:, None] * dy, 0.0)
    adjoint_in = tl.load(adjoint_entering_ptr + chunk_at, mask=col_ok, other=0.0)
    carried, adjoint = tl.associative_scan((next_decay, source), 0, _combine, reverse=not REVERSE)
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
        _program_tile(length, channels, height, width, num_lanes, FUSED, BLOCK_T, BLOCK_C)
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
