"""Step 2 of both passes: the state entering every chunk, from the chunks' maps."""

from __future__ import annotations

import triton
import triton.language as tl

from lungsrad.models.selective_scan.triton.kernels.common import (
    combine,
    tile_row,
)


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
        through, local = tl.associative_scan((decay, drive), 0, combine)
        leaving = local + through * state[None, :]  # state after each chunk
        following = tl.where(descending, chunk - 1, chunk + 1)
        follows_ok = ok & ((order + 1) < NUM_CHUNKS)[:, None]
        tl.store(entering_ptr + base[None, :] + following[:, None] * channels, leaving,
                 mask=follows_ok)  # fmt: skip
        state = tile_row(leaving, steps, BLOCK_N - 1)  # padded chunks are identities
