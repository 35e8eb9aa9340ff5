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
Modules: common (shared helpers), forward (steps 1 and 3), carry (step 2 of both passes),
backward (steps 1 and 3 on the adjoint). Imported only when the `triton` backend runs
(`availability.load_kernels`; TRITON_INTERPRET is read when the kernels are decorated).
"""

import triton.language as tl

from lungsrad.models.selective_scan.triton.kernels.backward import (
    scan_adjoint_totals_kernel,
    scan_chunk_gradient_kernel,
)
from lungsrad.models.selective_scan.triton.kernels.carry import scan_chunk_carry_kernel
from lungsrad.models.selective_scan.triton.kernels.forward import (
    scan_chunk_output_kernel,
    scan_chunk_totals_kernel,
)

__all__ = [
    "scan_adjoint_totals_kernel",
    "scan_chunk_carry_kernel",
    "scan_chunk_gradient_kernel",
    "scan_chunk_output_kernel",
    "scan_chunk_totals_kernel",
    "tl",
]
