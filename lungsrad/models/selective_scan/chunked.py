"""Chunked selective scan in plain PyTorch: the CPU default, forward and backward.

Per (batch, channel, state) the scan is the linear recurrence h_t = a_t h_{t-1} + x_t with
a_t = exp(delta_t A) and x_t = delta_t B_t u_t. Each row's sequence is cut into chunks of T
positions stored position-major inside the row, (rows, T, chunks), so one step of the recurrence
is one vector op over every chunk of every row; a short loop over chunks carries the states
across. Only products of decays are formed (no division, no cumulative sum of delta), so float32
stays as exact as the sequential loop for any length. The backward pass is the reverse recurrence
with the same decays, in a custom autograd Function (nothing T x T is ever stored).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from lungsrad.models.selective_scan.reference import compute_dtype

# Work on a few batch items at a time so that every temporary stays below glibc's mmap threshold
# (32 MiB): bigger blocks are mapped and unmapped on every allocation, paying page faults on
# every call.
_PIECE_ELEMENTS = 1 << 22
# PyTorch runs an elementwise CPU op on one thread below this many elements. The recurrence's
# steps are kept under it: a multi-threaded region per step costs a thread wake-up each time,
# which on a busy machine (parallel tests, several trials per host) dominates everything.
_GRAIN_SIZE = 32768


def default_chunk_size(length: int, rows: int | None = None) -> int:
    """Positions per chunk T for a sequence of `length` scanned over `rows` rows at once.

    About sqrt(L / 2) (the loop inside chunks takes 2T steps per pass, the one across chunks
    L / T), with at most (grain size / rows) chunks when `rows` is given (CPU), and a divisor of
    L when one is near (no padding).
    """
    if length <= 48:
        return max(length, 1)
    target = math.sqrt(2 * length)  # number of chunks
    if rows:
        target = max(1.0, min(target, (_GRAIN_SIZE - 1) // rows))
    divisors = [n for n in range(1, int(target) + 1) if length % n == 0]
    if divisors[-1] >= target / 2:
        return length // divisors[-1]
    return -(-length // round(target))


def _items_per_piece(batch: int, rows_per_item: int, length: int, on_cpu: bool) -> int:
    items = max(1, _PIECE_ELEMENTS // max(rows_per_item * length, 1))
    if on_cpu:
        items = min(items, max(1, (_GRAIN_SIZE - 1) // rows_per_item))
    return min(items, batch)


def _chunked(x: torch.Tensor, size: int) -> torch.Tensor:
    """View (..., L) as (..., size, L / size): [..., t, c] is sequence position c * size + t."""
    return x.unflatten(-1, (-1, size)).transpose(-1, -2)


def _chunk_copy(x: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """Contiguous (..., size, L / size) copy of `x` (..., L) in `dtype` (see `_chunked`)."""
    out = x.new_empty((*x.shape[:-1], size, x.shape[-1] // size), dtype=dtype)
    return out.copy_(_chunked(x, size))


def scan_chunks_(decay: torch.Tensor, x: torch.Tensor) -> None:
    """In place: x <- h with h_t = decay_t h_{t-1} + x_t along the chunked sequence, h_{-1} = 0.

    Args:
        decay: (rows, T, num_chunks); [r, t, c] is sequence position c * T + t of row r.
        x: (rows, T, num_chunks), overwritten with the states.
    """
    _, size, num_chunks = x.shape
    if num_chunks > 1:
        # Chunk-local end states (zero start), then the true start state of every chunk.
        local = x[:, 0].clone()
        for t in range(1, size):
            local = torch.addcmul(x[:, t], decay[:, t], local)
        through = decay.prod(1).t().contiguous()  # (num_chunks, rows): decay across a chunk
        local = local.t().contiguous()
        start = torch.zeros_like(local)
        for c in range(1, num_chunks):
            torch.addcmul(local[c - 1], through[c - 1], start[c - 1], out=start[c])
        x[:, 0].addcmul_(decay[:, 0], start.t())
    for t in range(1, size):
        x[:, t].addcmul_(decay[:, t], x[:, t - 1])


def scan_chunks_reverse_(decay: torch.Tensor, x: torch.Tensor) -> None:
    """In place: x <- g with g_t = x_t + decay_{t+1} g_{t+1} (the adjoint of `scan_chunks_`).

    Args:
        decay: (rows, T, num_chunks), the forward decays (not shifted).
        x: (rows, T, num_chunks), overwritten.
    """
    _, size, num_chunks = x.shape
    if num_chunks > 1:
        local = x[:, size - 1].clone()
        for t in range(size - 2, -1, -1):
            local = torch.addcmul(x[:, t], decay[:, t + 1], local)
        # Entering chunk c from chunk c + 1 multiplies by decay[0] of chunk c + 1, and a state
        # crosses chunk c + 1 with the product of its decays 1..T-1.
        first = decay[:, 0].t()
        carry_gain = (first * decay[:, 1:].prod(1).t()).contiguous()  # (num_chunks, rows)
        carry_local = (first * local.t()).contiguous()
        end = torch.zeros_like(carry_local)  # end[c]: what enters chunk c at its last position
        for c in range(num_chunks - 2, -1, -1):
            torch.addcmul(carry_local[c + 1], carry_gain[c + 1], end[c + 1], out=end[c])
        x[:, size - 1].add_(end.t())
    for t in range(size - 2, -1, -1):
        x[:, t].addcmul_(decay[:, t + 1], x[:, t + 1])


def _forward_piece(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    bias: torch.Tensor | None,
    delta_softplus: bool,
    size: int,
    y_out: torch.Tensor,
) -> list[torch.Tensor]:
    """Scans a block of batch items into `y_out` (b, d, L); returns what the backward needs.

    Inputs keep their sequence layout and are read through chunked views, so the transposition
    happens inside the first elementwise op instead of a separate copy.
    """
    batch, channels, length = u.shape
    groups, state = B.shape[1], A.shape[1]
    per_group = (batch, groups, channels // groups)
    dtype = A.dtype
    chunk_shape = (batch, channels, size, length // size)

    dt = u.new_empty(chunk_shape, dtype=dtype)  # delta + bias, chunk layout
    if bias is not None:
        torch.add(_chunked(delta, size), bias.view(1, channels, 1, 1), out=dt)
    else:
        dt.copy_(_chunked(delta, size))
    ds = F.softplus(dt) if delta_softplus else dt
    drive = torch.mul(ds, _chunked(u, size)).view(*per_group, 1, length)  # delta * u
    Bc, Cc = _chunk_copy(B, size, dtype), _chunk_copy(C, size, dtype)
    Bc, Cc = Bc.view(batch, groups, 1, state, length), Cc.view(batch, groups, 1, state, length)

    decay = ds.view(batch, channels, 1, length) * A.view(1, channels, state, 1)
    decay.exp_()  # (b, d, N, L) in chunk layout
    states = drive * Bc  # (b, g, d/g, N, L)
    rows = (batch * channels * state, size, length // size)
    scan_chunks_(decay.view(rows), states.view(rows))

    # y = C h (+ D u), written straight back in sequence order.
    y_chunks = _chunked(y_out.view(*per_group, length), size)  # (b, g, d/g, T, nc) view
    if state == 1:
        gates = Cc.view(batch, groups, 1, size, -1)
        torch.mul(states.view(*per_group, size, -1), gates, out=y_chunks)
    else:
        y_chunks.copy_((states * Cc).sum(3).view(*per_group, size, -1))
    if D is not None:
        y_out.addcmul_(u, D.view(1, channels, 1))
    return [dt, ds, drive, decay, states, Bc, Cc]


def _backward_piece(
    saved: list[torch.Tensor],
    u: torch.Tensor,
    grad_y: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor | None,
    *,
    size: int,
    delta_softplus: bool,
    grad_u: torch.Tensor | None,
    grad_delta: torch.Tensor | None,
    grad_B: torch.Tensor | None,
    grad_C: torch.Tensor | None,
    sums: dict[str, list[torch.Tensor]],
    needs_A: bool,
    needs_D: bool,
    needs_bias: bool,
) -> None:
    """Gradients for one block of batch items, written into the given output slices."""
    dt, ds, drive, decay, states, Bc, Cc = saved
    batch, channels, length = u.shape
    groups, state = Bc.shape[1], A.shape[1]
    per_group = (batch, groups, channels // groups)
    split = (size, length // size)
    rows = (batch * channels * state, *split)
    dtype = ds.dtype

    if needs_D:
        sums["D"].append(torch.einsum("bdl,bdl->d", grad_y.to(dtype), u.to(dtype)))
    gy = _chunked(grad_y.view(*per_group, 1, length), size)  # (b, g, d/g, 1, T, nc) view
    if grad_C is not None:
        products = gy * states.view(*per_group, state, *split)
        _chunked(grad_C, size).copy_(products.sum(2))
        del products

    adjoint, grad_log = _adjoint_and_log_decay_gradient(gy, Cc, decay, states, rows=rows)

    if needs_A:
        sums["A"].append(torch.einsum("bdnl,bdl->dn", grad_log, ds.view(batch, channels, length)))
    if state == 1:
        grad_ds = grad_log.view(batch, channels, length).mul_(A.view(1, channels, 1))
    else:
        grad_ds = (grad_log * A.view(1, channels, state, 1)).sum(2)
    del grad_log

    if grad_B is not None:
        _chunked(grad_B, size).copy_((adjoint * drive).sum(2).view(*grad_B.shape[:-1], *split))
    if state == 1:
        grad_drive = adjoint.view(*per_group, length) * Bc.view(batch, groups, 1, length)
    else:
        grad_drive = (adjoint * Bc).sum(3)
    grad_drive = grad_drive.view(batch, channels, *split)
    del adjoint

    if grad_u is not None:
        torch.mul(grad_drive, ds.view(batch, channels, *split), out=_chunked(grad_u, size))
        if D is not None:
            grad_u.addcmul_(grad_y, D.view(1, channels, 1))
    grad_ds = grad_ds.view(batch, channels, *split)
    grad_ds.addcmul_(grad_drive, _chunked(u, size))
    del grad_drive
    if grad_delta is None and not needs_bias:
        return
    target = grad_delta if grad_delta is not None else torch.empty_like(u, dtype=dtype)
    _write_delta_gradient(grad_ds, dt, target, size=size, delta_softplus=delta_softplus)
    if needs_bias:
        sums["bias"].append(target.sum((0, 2)))


def _adjoint_and_log_decay_gradient(
    gy: torch.Tensor,
    Cc: torch.Tensor,
    decay: torch.Tensor,
    states: torch.Tensor,
    *,
    rows: tuple[int, int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adjoint g (b, g, d/g, N, L) chunk layout, d loss / d log(a) (b, d, N, L)) of a piece.

    gy: (b, g, d/g, 1, T, nc) chunked view of grad_y; Cc, decay, states as `_forward_piece`
    saved them; rows: (b * d * N, T, nc), the scan's row view.
    """
    batch, groups, _, state = Cc.shape[:4]
    split = rows[1:]
    # Adjoint of the recurrence: g_t = C_t dy_t + a_{t+1} g_{t+1}.
    adjoint = states.new_empty(states.shape)  # (b, g, d/g, N, L) chunk layout
    torch.mul(
        gy, Cc.view(batch, groups, 1, state, *split), out=adjoint.view(*gy.shape[:3], state, *split)
    )
    adjoint_rows, decay_rows, states_rows = adjoint.view(rows), decay.view(rows), states.view(rows)
    scan_chunks_reverse_(decay_rows, adjoint_rows)

    # d loss / d log(a_t) = g_t h_{t-1} a_t; the h_{-1} of a chunk is the previous chunk's end.
    grad_log = torch.empty_like(adjoint_rows)
    torch.mul(adjoint_rows[:, 1:], states_rows[:, :-1], out=grad_log[:, 1:])
    torch.mul(adjoint_rows[:, 0, 1:], states_rows[:, -1, :-1], out=grad_log[:, 0, 1:])
    grad_log[:, 0, 0].zero_()
    channels = states.shape[1] * states.shape[2]
    grad_log = grad_log.mul_(decay_rows).view(batch, channels, state, split[0] * split[1])
    return adjoint, grad_log


def _write_delta_gradient(
    grad_ds: torch.Tensor,
    dt: torch.Tensor,
    target: torch.Tensor,
    *,
    size: int,
    delta_softplus: bool,
) -> None:
    """Writes d loss / d delta into `target` (b, d, L) in sequence order, from grad_ds (the
    gradient of softplus(dt), chunk layout)."""
    if delta_softplus:
        # d softplus(dt) / d dt = sigmoid(dt), fused with the write back to sequence order.
        torch.ops.aten.softplus_backward.grad_input(
            grad_ds, dt, 1.0, 20.0, grad_input=_chunked(target, size)
        )
    else:
        _chunked(target, size).copy_(grad_ds)


def _pieces(batch: int, items: int) -> list[slice]:
    return [slice(i, min(i + items, batch)) for i in range(0, batch, items)]


class _ChunkedSelectiveScan(torch.autograd.Function):
    """Forward and backward of the selective scan; L must be a multiple of `size`."""

    @staticmethod
    def forward(
        ctx: Any,
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor | None,
        delta_bias: torch.Tensor | None,
        delta_softplus: bool,
        size: int,
        items: int,
    ) -> torch.Tensor:
        dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
        ctx.dtypes = [
            t.dtype if t is not None else None for t in (u, delta, A, B, C, D, delta_bias)
        ]
        batch, channels, length = u.shape
        A = A.to(dtype)
        D = D.to(dtype) if D is not None else None
        bias = delta_bias.to(dtype) if delta_bias is not None else None

        y = u.new_empty((batch, channels, length), dtype=dtype)
        saved: list[torch.Tensor] = []
        pieces = _pieces(batch, items)
        for piece in pieces:
            saved += _forward_piece(
                u[piece],
                delta[piece],
                A,
                B[piece],
                C[piece],
                D,
                bias,
                delta_softplus,
                size,
                y[piece],
            )
        ctx.save_for_backward(u, A, D, *saved)
        ctx.pieces = pieces
        ctx.size = size
        ctx.delta_softplus = delta_softplus
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, A, D, *saved = ctx.saved_tensors
        grad_y = grad_y.contiguous()  # autograd may hand over expanded (stride 0) gradients
        u_dtype, delta_dtype, A_dtype, B_dtype, C_dtype, D_dtype, bias_dtype = ctx.dtypes
        needs = ctx.needs_input_grad
        batch, channels, length = u.shape
        groups, state = saved[5].shape[1], A.shape[1]
        dtype = A.dtype

        def empty(shape: tuple[int, ...], needed: bool) -> torch.Tensor | None:
            return u.new_empty(shape, dtype=dtype) if needed else None

        grad_u = empty((batch, channels, length), needs[0])
        grad_delta = empty((batch, channels, length), needs[1])
        grad_B = empty((batch, groups, state, length), needs[3])
        grad_C = empty((batch, groups, state, length), needs[4])
        sums: dict[str, list[torch.Tensor]] = {"A": [], "D": [], "bias": []}
        for index, piece in enumerate(ctx.pieces):
            _backward_piece(
                saved[7 * index : 7 * index + 7],
                u[piece],
                grad_y[piece],
                A,
                D,
                size=ctx.size,
                delta_softplus=ctx.delta_softplus,
                grad_u=grad_u[piece] if grad_u is not None else None,
                grad_delta=grad_delta[piece] if grad_delta is not None else None,
                grad_B=grad_B[piece] if grad_B is not None else None,
                grad_C=grad_C[piece] if grad_C is not None else None,
                sums=sums,
                needs_A=needs[2],
                needs_D=D is not None and needs[5],
                needs_bias=bias_dtype is not None and needs[6],
            )

        def total(name: str, dtype: torch.dtype | None) -> torch.Tensor | None:
            return torch.stack(sums[name]).sum(0).to(dtype) if sums[name] else None

        def cast(grad: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
            return grad.to(dtype) if grad is not None else None

        return (
            cast(grad_u, u_dtype),
            cast(grad_delta, delta_dtype),
            total("A", A_dtype),
            cast(grad_B, B_dtype),
            cast(grad_C, C_dtype),
            total("D", D_dtype),
            total("bias", bias_dtype),
            None,
            None,
            None,
        )


def selective_scan_chunked(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = True,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Chunked selective scan; same maths and shapes as `selective_scan_reference`.

    Args:
        u: (batch, channels, L).
        delta: (batch, channels, L), before bias and softplus.
        A: (channels, N).
        B: (batch, groups, N, L) or (batch, N, L).
        C: like B.
        D: (channels,) or None.
        delta_bias: (channels,) or None.
        delta_softplus: apply softplus to delta + delta_bias.
        chunk_size: positions per chunk; None: `default_chunk_size`.

    Returns:
        (batch, channels, L) in float64 for float64 input, else float32.
    """
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    batch, channels, length = u.shape
    rows_per_item = channels * A.shape[1]
    items = _items_per_piece(batch, rows_per_item, length, on_cpu=u.device.type == "cpu")
    size = chunk_size or default_chunk_size(
        length, rows=items * rows_per_item if u.device.type == "cpu" else None
    )
    padding = -length % size
    if padding:
        # Zero padding at the end: padded positions get no input (u = 0, B = 0) and no gradient.
        u, delta, B, C = (F.pad(t, (0, padding)) for t in (u, delta, B, C))
    y = _ChunkedSelectiveScan.apply(u, delta, A, B, C, D, delta_bias, delta_softplus, size, items)
    return y[..., :length] if padding else y
