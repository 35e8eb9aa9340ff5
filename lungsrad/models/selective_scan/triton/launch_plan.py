"""The `triton` backend's launch plan: chunk length, channel blocks and warps of a scan's
launches, from its shape and the GPU's SM count, and the grid limits a shape must fit."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lungsrad.errors import UserError
from lungsrad.models.selective_scan.triton.availability import processor_count


def next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)  # integer maths: SymInt-safe


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and warps of one scan's launches (see `plan_launch`).

    block_t: chunk length, the steps of a program's tile (a power of 2); the forward's entering
        states are per chunk, so the backward uses the same.
    block_c: channels per program in the forward (a power of 2).
    backward_block_c: channels per program in the backward.
    carry_block: chunks composed per step by the carry kernel (a power of 2).
    carry_block_c: channels per carry program (a power of 2).
    num_warps, backward_num_warps: warps per program, forward and backward.
    """

    block_t: int
    block_c: int
    backward_block_c: int
    carry_block: int
    carry_block_c: int
    num_warps: int
    backward_num_warps: int

    def as_ints(self) -> list[int]:
        return [
            self.block_t,
            self.block_c,
            self.backward_block_c,
            self.carry_block,
            self.carry_block_c,
            self.num_warps,
            self.backward_num_warps,
        ]


# Channels per program: 32 contiguous float32 channels are one 128-byte line of the map.
_MAX_BLOCK_C = 32
# Elements of a program's tile (block_t x block_c): the largest tile whose backward compiles for
# sm_90 without spills at 4 warps (`benchmarks/triton_static.py` prints the registers).
_TILE_ELEMENTS = 1024
_BACKWARD_TILE_ELEMENTS = 512
_MIN_BLOCK_T = 16
# Programs per SM the chunk length is shortened for (down to _MIN_BLOCK_T): enough resident
# warps to hide the loads' latency; the carry pass grows as chunks shorten.
_PROGRAMS_PER_PROCESSOR = 8
_MAX_CARRY_BLOCK = 64
# Channels per carry program: narrow, so that the light carry pass also has programs for every
# SM (its tile is carry_block x 8).
_CARRY_BLOCK_C = 8
NUM_WARPS = 4


def plan_launch(
    batch: int,
    channels: int,
    length: int,
    *,
    directions: int,
    fused: bool,
    processors: int | None,
) -> LaunchConfig:
    """The launch table: tiles and warps for a scan of `directions` x `channels` over `length`.

    Channel blocks of up to 32; chunks as long as a 1024-element tile allows, halved (down to
    16 steps) until every SM gets at least 8 programs (`processors`: SMs of the GPU; None: the
    interpreter, which gets small tiles since its scans are Python loops). The backward keeps
    the chunk and halves the channel block (it holds about three times the live tiles).
    """
    if processors is None:
        block_t = min(16, next_power_of_2(length))
        block_c = min(8, next_power_of_2(channels))
        return LaunchConfig(block_t, block_c, block_c, 4, block_c, NUM_WARPS, NUM_WARPS)
    lanes = 2 if fused else directions
    block_c = min(_MAX_BLOCK_C, next_power_of_2(channels))
    block_t = max(_MIN_BLOCK_T, min(_TILE_ELEMENTS // block_c, next_power_of_2(length)))
    while (
        block_t > _MIN_BLOCK_T
        and cdiv(length, block_t) * cdiv(channels, block_c) * batch * lanes
        < _PROGRAMS_PER_PROCESSOR * processors
    ):
        block_t //= 2
    backward_block_c = max(1, min(block_c, _BACKWARD_TILE_ELEMENTS // block_t))
    carry_block = min(_MAX_CARRY_BLOCK, next_power_of_2(cdiv(length, block_t)))
    carry_block_c = min(_CARRY_BLOCK_C, block_c)
    return LaunchConfig(
        block_t, block_c, backward_block_c, carry_block, carry_block_c, NUM_WARPS, NUM_WARPS
    )


def default_launch(
    batch: int, channels: int, length: int, *, directions: int, fused: bool, device: torch.device
) -> LaunchConfig:
    """`plan_launch` for tensors on `device` (the interpreter's small tiles off CUDA)."""
    processors = processor_count(device) if device.type == "cuda" else None
    return plan_launch(
        batch, channels, length, directions=directions, fused=fused, processors=processors
    )


def check_launch(
    batch: int, directions: int, channels: int, length: int, fused: bool, config: LaunchConfig
) -> None:
    """Raises ValueError for a malformed plan (block sizes not powers of 2, a fused scan without
    4 directions) and UserError for a shape past CUDA's grid limits."""
    sizes = (
        config.block_t,
        config.block_c,
        config.backward_block_c,
        config.carry_block,
        config.carry_block_c,
    )
    if any(b < 1 or b & (b - 1) for b in sizes):
        raise ValueError(f"triton scan: block sizes must be powers of 2, got {config}")
    if fused and directions != 4:
        raise ValueError(f"triton scan: the fused SS2D scan has 4 directions, got {directions}")
    lanes = 2 if fused else directions
    grid = (
        cdiv(length, config.block_t),
        cdiv(channels, min(config.block_c, config.backward_block_c, config.carry_block_c)),
        batch * lanes,
    )
    # CUDA's limits: 2**31 - 1 programs along the first grid dimension, 65535 along the others.
    if grid[0] >= 2**31 or max(grid[1:]) > 65535 or batch * directions > 65535:
        raise UserError(
            f"selective scan backend 'triton' cannot launch {directions} channel groups of "
            f"{channels} channels over {length} steps for batch {batch} (grid {grid}); use "
            "backend 'chunked' for this shape"
        )
