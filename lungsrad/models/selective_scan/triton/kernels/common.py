"""Helpers the scan kernels share: the map composition, softplus, a chunk program's tile, the
per-channel parameters and the decay and drive of every step."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def combine(a_left, x_left, a_right, x_right):
    # Composition of h -> a h + x maps: the left one first (in reverse scans, the later one).
    return a_left * a_right, x_left * a_right + x_right


@triton.jit
def softplus(x):
    # torch's softplus (threshold 20); log1p(e) as log(1 + e) * e / ((1 + e) - 1) keeps full
    # relative precision for tiny e (libdevice's log1p is not available in the interpreter).
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def positions(lane, index, height, width, FUSED: tl.constexpr):
    """Map position of scan index `index` in lane `lane` (identity unless FUSED; lane 1 reads
    the map column-major)."""
    if FUSED:
        return tl.where(lane == 1, (index % height) * width + index // height, index)
    else:
        return index


@triton.jit
def program_tile(
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
    pos = positions(lane, index, height, width, FUSED)
    return chunk, block, batch, lane, num_directions, cols, col_ok, rows, index, step_ok, valid, pos


@triton.jit
def tile_row(tile, rows, index):
    """Row `index` of a (rows, BLOCK_C) tile as a (BLOCK_C,) vector."""
    return tl.sum(tl.where(rows[:, None] == index, tile, 0.0), axis=0)


@triton.jit
def decay_and_drive(delta, u, gate_b, A, bias, valid, SOFTPLUS: tl.constexpr):
    """(dt, ds, a, x): dt = delta + bias, ds = softplus(dt), a = exp(ds A), x = ds u B; a = 1 and
    x = 0 outside `valid` (the identity map)."""
    dt = delta + bias[None, :]
    if SOFTPLUS:
        ds = softplus(dt)
    else:
        ds = dt
    decay = tl.where(valid, tl.exp(ds * A[None, :]), 1.0)
    drive = tl.where(valid, ds * u * gate_b[:, None], 0.0)
    return dt, ds, decay, drive


@triton.jit
def channel_parameters(
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
