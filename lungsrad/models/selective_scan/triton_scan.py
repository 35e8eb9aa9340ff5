"""The `triton` selective-scan backend: Triton kernels (d_state 1) behind one torch custom op.

`selective_scan_triton` has the reference's signature; `ss2d_scan_triton` also does SS2D's
cross-scan and cross-merge inside the kernels (see `triton_kernels.py`). Both run on CUDA
tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before triton is
imported), which is how CI tests them. The op pair `lungsrad::triton_scan_forward` /
`lungsrad::triton_scan_backward` is registered with `torch.library`, so autograd and
torch.compile see one opaque op.
"""

# No `from __future__ import annotations`: torch.library reads the op signatures' annotations.

import math
from types import ModuleType
from typing import Any

import torch

from lungsrad.errors import BackendUnavailableError, UserError
from lungsrad.models.selective_scan.reference import compute_dtype

TRITON_HINT = (
    "Triton comes with torch's Linux CUDA wheels (elsewhere `pip install triton`); "
    "or choose model.scan_backend 'chunked'"
)
_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Tile of a program: BLOCK_T positions x BLOCK_C channels, at most this many elements. With 4
# warps, 512 compiles (sm_90) to 95 registers forward and 168 backward without spills; 1024
# needs 180 and 255 with spills in the backward.
_TILE_ELEMENTS = 512
NUM_WARPS = 4


# What importing the kernels gave (the module or the ImportError), whether they were built for
# the interpreter, and SM counts per device: memoised in a plain dict rather than
# functools.cache, which torch.compile warns about and traces through.
_memo: dict[Any, Any] = {}


def _load_kernels() -> ModuleType | ImportError:
    if "kernels" not in _memo:
        try:
            from lungsrad.models.selective_scan import triton_kernels
        except ImportError as error:
            _memo["kernels"] = error
        else:
            from triton.runtime.interpreter import InterpretedFunction

            kernel = triton_kernels.scan_forward_kernel
            _memo["interpreted"] = isinstance(kernel, InterpretedFunction)
            _memo["kernels"] = triton_kernels
    return _memo["kernels"]


def is_triton_installed() -> bool:
    """Whether triton imports (says nothing about a GPU)."""
    return not isinstance(_load_kernels(), ImportError)


def is_interpreter_on() -> bool:
    """Whether the kernels were built for Triton's interpreter (TRITON_INTERPRET=1 at import)."""
    _load_kernels()
    return bool(_memo.get("interpreted", False))


def _processor_count(device: torch.device) -> int:
    key = ("processors", device.index)
    if key not in _memo:
        _memo[key] = torch.cuda.get_device_properties(device).multi_processor_count
    return _memo[key]


def load_kernels() -> ModuleType:
    """The kernel module; ImportError naming the backend and the alternative when triton is
    missing."""
    kernels = _load_kernels()
    if isinstance(kernels, ImportError):
        raise BackendUnavailableError(
            f"selective scan backend 'triton' is not available ({kernels}); {TRITON_HINT}"
        )
    return kernels


def check_triton_inputs(u: torch.Tensor, A: torch.Tensor) -> None:
    """Raises (one line, naming the backend and what to do) for inputs the kernels cannot take.

    Args:
        u: (batch, ...) scan input; its device and dtype are checked.
        A: (channels, N) or (channels * directions,) decay rates; N must be 1.
    """
    load_kernels()
    if u.device.type != "cuda" and not is_interpreter_on():
        raise UserError(
            f"selective scan backend 'triton' needs CUDA tensors (or Triton's interpreter, "
            f"TRITON_INTERPRET=1), got tensors on {u.device}; use backend 'chunked' (or 'auto') "
            "on CPU"
        )
    if A.dim() == 2 and A.shape[1] != 1:
        raise UserError(
            f"selective scan backend 'triton' supports d_state N = 1 only, got N = {A.shape[1]}; "
            "use backend 'chunked' for N > 1"
        )
    if u.dtype not in _INPUT_DTYPES:
        raise ValueError(
            f"selective scan backend 'triton' supports float32, float16, bfloat16 and float64, "
            f"got {u.dtype}; use backend 'reference' for {u.dtype}"
        )
    if u.numel() == 0:
        raise ValueError(
            f"selective scan backend 'triton' needs a non-empty input, got shape {tuple(u.shape)}"
        )
    if u[0].numel() >= 2**31:  # offsets inside one batch item are 32-bit in the kernels
        raise UserError(
            f"selective scan backend 'triton' takes under 2**31 elements per batch item, got "
            f"{tuple(u.shape)}; use backend 'chunked' for this shape"
        )


def _next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def default_launch(
    batch: int, channels: int, length: int, *, directions: int, fused: bool, device: torch.device
) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_C, directions per program) for a scan of `directions` x `channels`.

    A fused scan sums its four directions inside one program unless that leaves fewer than four
    programs per SM even with 8-channel blocks (then one program per direction, summed after);
    channel blocks shrink (down to 8) until every SM has two programs; chunks take as many
    positions as the tile allows. Untuned: see benchmarks/scan_gpu.py.
    """
    if device.type != "cuda":  # the interpreter: small tiles, its scans are Python loops
        per_program = directions if fused else 1
        return min(16, _next_power_of_2(length)), min(8, _next_power_of_2(channels)), per_program
    processors = _processor_count(device)
    per_program = 1
    if fused and batch * math.ceil(channels / 8) >= 4 * processors:
        per_program = directions
    groups = directions // per_program
    block_c = min(32, max(8, _next_power_of_2(channels)))
    while block_c > 8 and batch * math.ceil(channels / block_c) * groups < 2 * processors:
        block_c //= 2
    block_t = min(_TILE_ELEMENTS // block_c, max(16, _next_power_of_2(length)))
    return block_t, block_c, per_program


def _geometry(u: torch.Tensor, B: torch.Tensor, fused: bool) -> tuple[int, int, int, int]:
    """(batch, directions K, channels per direction, L) of the op's layouts."""
    if fused:
        batch, length, channels = u.shape
        return batch, B.shape[1], channels, length
    batch, total, length = u.shape
    return batch, B.shape[1], total // B.shape[1], length


def _map_strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    """[batch, direction, position, channel] strides of a (batch, L, C) map shared by the
    directions, or of (K, batch, L, C) maps, one per direction."""
    if t.dim() == 3:
        return (t.stride(0), 0, t.stride(1), t.stride(2))
    return (t.stride(1), t.stride(0), t.stride(2), t.stride(3))


def _strides(
    u: torch.Tensor,
    delta: torch.Tensor,
    B: torch.Tensor,
    out: torch.Tensor,
    channels: int,
    fused: bool,
) -> tuple[int, ...]:
    """[batch, direction, position, channel] strides of u (and dy), of out (y or du), of delta,
    and [batch, direction, position] of B (and C)."""
    sizes: tuple[int, ...]
    if fused:
        sizes = (*_map_strides(u), *_map_strides(out), *_map_strides(delta))
    else:  # (batch, K * channels, L) tensors, direction k = channel group
        sizes = tuple(
            size
            for t in (u, out, delta)
            for size in (t.stride(0), channels * t.stride(1), t.stride(2), t.stride(1))
        )
    return (*sizes, B.stride(0), B.stride(1), B.stride(2))


def _launch_options(
    kernels: ModuleType,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    fused: bool,
    dtype: torch.dtype,
    blocks: tuple[int, int, int],
    num_chunks: int,
) -> dict[str, Any]:
    block_t, block_c, per_program = blocks
    # The chunk count is a compile-time constant: the interpreter cannot loop over a run-time
    # integer with numpy 2 (one compiled kernel per sequence length, four in DASS).
    return {
        "NUM_CHUNKS": num_chunks,
        "HAS_D": D is not None,
        "HAS_BIAS": delta_bias is not None,
        "SOFTPLUS": delta_softplus,
        "FUSED": fused,
        "DIRECTIONS": per_program,
        "ACCUMULATE": fused and per_program > 1,
        "COMPUTE": kernels.tl.float64 if dtype == torch.float64 else kernels.tl.float32,
        "BLOCK_T": block_t,
        "BLOCK_C": block_c,
        "num_warps": NUM_WARPS,
    }


def _grid(batch: int, directions: int, channels: int, blocks: tuple[int, int, int]) -> tuple:
    _, block_c, per_program = blocks
    return (batch, math.ceil(channels / block_c), directions // per_program)


def _check_launch(
    fused: bool, directions: int, channels: int, blocks: tuple[int, int, int]
) -> None:
    block_t, block_c, per_program = blocks
    if any(b < 1 or b & (b - 1) for b in (block_t, block_c)):
        raise ValueError(f"triton scan: block sizes must be powers of 2, got {blocks[:2]}")
    if per_program not in ((1, directions) if fused else (1,)):
        raise ValueError(
            f"triton scan: {per_program} directions per program; the fused scan takes 1 or "
            f"{directions}, the plain one 1"
        )
    grid = _grid(1, directions, channels, blocks)
    if max(grid[1:]) > 65535:  # CUDA's limit on the second and third grid dimensions
        raise UserError(
            f"selective scan backend 'triton' cannot launch {directions} channel groups of "
            f"{channels} channels (grid {grid}); use backend 'chunked' for this shape"
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
    block_t: int,
    block_c: int,
    directions_per_program: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan of contiguous inputs; returns (y, states entering every chunk).

    Plain: u, delta (batch, K * Cd, L), B, C (batch, K, L), A, D, delta_bias (K * Cd,).
    Fused SS2D (K = 4, L = height * width): u (batch, L, C), delta (4, batch, L, C), B, C
    (batch, 4, L), A, D, delta_bias (4 * C,); y (batch, L, C) sums the four directions.
    y: u's shape, float32 (float64 for float64 input); states: (batch, K, chunks, Cd).
    Programs scan `directions_per_program` directions each (plain: 1; fused: 1 or 4).
    """
    kernels = load_kernels()
    blocks = (block_t, block_c, directions_per_program)
    batch, directions, channels, length = _geometry(u, B, fused)
    _check_launch(fused, directions, channels, blocks)
    dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
    num_chunks = -(-length // block_t)  # integer maths: SymInt-safe
    separate = fused and directions_per_program == 1  # one output map per direction
    y = u.new_empty((directions, *u.shape) if separate else u.shape, dtype=dtype)
    states = u.new_empty((batch, directions, num_chunks, channels), dtype=dtype)
    options = _launch_options(
        kernels, D, delta_bias, delta_softplus, fused, dtype, blocks, num_chunks
    )
    kernels.scan_forward_kernel[_grid(batch, directions, channels, blocks)](
        u, delta, A, B, C, D if D is not None else A, delta_bias if delta_bias is not None else A,
        y, states,
        length, channels, height, width,
        *_strides(u, delta, B, y, channels, fused),
        **options,
    )  # fmt: skip
    return (y.sum(0) if separate else y), states


@triton_scan_forward.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, fused, block_t, *_):
    batch, directions, channels, length = _geometry(u, B, fused)
    dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
    num_chunks = -(-length // block_t)
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
    block_t: int,
    block_c: int,
    directions_per_program: int,
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """Gradients (u, delta, A, B, C, D, delta_bias) of `triton_scan_forward`'s y; grad_y is
    contiguous like y. u's gradient is in the compute dtype, delta's in delta's dtype, the others
    in the compute dtype (D's and delta_bias's are sums even when D / delta_bias are None)."""
    kernels = load_kernels()
    blocks = (block_t, block_c, directions_per_program)
    batch, directions, channels, length = _geometry(u, B, fused)
    _check_launch(fused, directions, channels, blocks)
    dtype = states.dtype
    separate = fused and directions_per_program == 1
    grad_u = u.new_empty((directions, *u.shape) if separate else u.shape, dtype=dtype)
    grad_delta = torch.empty_like(delta)
    num_blocks = math.ceil(channels / block_c)
    part_B = u.new_empty((num_blocks, batch, directions, length), dtype=dtype)
    part_C = torch.empty_like(part_B)
    part_A, part_D, part_bias = (
        u.new_empty((batch, directions * channels), dtype=dtype) for _ in range(3)
    )
    options = _launch_options(
        kernels, D, delta_bias, delta_softplus, fused, dtype, blocks, states.shape[2]
    )
    kernels.scan_backward_kernel[_grid(batch, directions, channels, blocks)](
        grad_y, u, delta, A, B, C, D if D is not None else A,
        delta_bias if delta_bias is not None else A, states,
        grad_u, grad_delta, part_B, part_C, part_A, part_D, part_bias,
        length, channels, height, width, batch,
        *_strides(u, delta, B, grad_u, channels, fused),
        **options,
    )  # fmt: skip
    return (
        grad_u.sum(0) if separate else grad_u,
        grad_delta,
        part_A.sum(0),
        part_B.sum(0),
        part_C.sum(0),
        part_D.sum(0),
        part_bias.sum(0),
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
    block_sizes: tuple[int, int] | None = None,
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
        block_sizes: (positions, channels) per program tile; None: `default_launch`'s.

    Returns:
        (batch, channels, L): float64 for float64 input, otherwise float32.
    """
    check_triton_inputs(u, A)
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    batch, total, length = u.shape
    groups = B.shape[1]
    block_t, block_c, _ = default_launch(
        batch, total // groups, length, directions=groups, fused=False, device=u.device
    )
    block_t, block_c = block_sizes or (block_t, block_c)
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
        block_t,
        block_c,
        1,
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
    block_sizes: tuple[int, int] | None = None,
    directions_per_program: int | None = None,
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
        block_sizes: (positions, channels) per program tile; None: `default_launch`'s.
        directions_per_program: 4 (each program sums the directions into the map) or 1 (one
            program per direction, maps summed after); None: `default_launch`'s.

    Returns:
        (batch, L, C): the four directions summed, float64 for float64 input, else float32.
    """
    check_triton_inputs(u, A)
    batch, length, channels = u.shape
    if length != height * width or delta.shape != (4, batch, length, channels):
        raise ValueError(
            f"ss2d_scan_triton: u (batch, {height} x {width}, C) and delta (4, batch, L, C) "
            f"expected, got {tuple(u.shape)} and {tuple(delta.shape)}"
        )
    block_t, block_c, per_program = default_launch(
        batch, channels, length, directions=4, fused=True, device=u.device
    )
    block_t, block_c = block_sizes or (block_t, block_c)
    y, _ = triton_scan_forward(
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
        block_t,
        block_c,
        directions_per_program or per_program,
    )
    return y
