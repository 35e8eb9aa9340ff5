"""The `triton` selective-scan backend: Triton kernels (d_state 1) behind one torch custom op.

`selective_scan_triton` has the reference's signature; `ss2d_scan_triton` also does SS2D's
cross-scan and cross-merge inside the kernels (see `triton_kernels.py`). Both run on CUDA
tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before triton is
imported), which is how CI tests them. The op pair `lungsrad::triton_scan_forward` /
`lungsrad::triton_scan_backward` is registered with `torch.library`, so autograd and
torch.compile see one opaque op.
"""

# No `from __future__ import annotations`: torch.library reads the op signatures' annotations.

import functools
import math
from types import ModuleType
from typing import Any

import torch

from lungsrad.models.selective_scan.reference import compute_dtype

TRITON_HINT = (
    "Triton comes with torch's Linux CUDA wheels (elsewhere `pip install triton`); "
    "or choose model.scan_backend 'chunked'"
)
_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Tile of a program: BLOCK_T positions x BLOCK_C channels, at most this many elements (each
# thread of 4 warps then holds 8 values per live tile; the backward keeps about 15 tiles live).
_TILE_ELEMENTS = 1024


@functools.cache
def _load_kernels() -> ModuleType | ImportError:
    try:
        from lungsrad.models.selective_scan import triton_kernels
    except ImportError as error:
        return error
    return triton_kernels


def is_triton_installed() -> bool:
    """Whether triton imports (says nothing about a GPU)."""
    return not isinstance(_load_kernels(), ImportError)


@functools.cache
def is_interpreter_on() -> bool:
    """Whether the kernels were built for Triton's interpreter (TRITON_INTERPRET=1 at import)."""
    kernels = _load_kernels()
    if isinstance(kernels, ImportError):
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernels.scan_forward_kernel, InterpretedFunction)


def load_kernels() -> ModuleType:
    """The kernel module; ImportError naming the backend and the alternative when triton is
    missing."""
    kernels = _load_kernels()
    if isinstance(kernels, ImportError):
        raise ImportError(
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
        raise ValueError(
            f"selective scan backend 'triton' needs CUDA tensors (or Triton's interpreter, "
            f"TRITON_INTERPRET=1), got tensors on {u.device}; use backend 'chunked' (or 'auto') "
            "on CPU"
        )
    if A.dim() == 2 and A.shape[1] != 1:
        raise ValueError(
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


def _next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def default_block_sizes(
    batch: int, channels: int, length: int, *, programs_per_item: int, device: torch.device
) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_C): channel blocks small enough to give every SM two programs (down to 8
    channels), then as many positions per chunk as the tile allows. Untuned: see
    benchmarks/scan_gpu.py."""
    if device.type != "cuda":  # the interpreter: small tiles, its scans are Python loops
        return min(16, _next_power_of_2(length)), min(8, _next_power_of_2(channels))
    processors = torch.cuda.get_device_properties(device).multi_processor_count
    block_c = min(32, max(8, _next_power_of_2(channels)))
    while (
        block_c > 8 and batch * math.ceil(channels / block_c) * programs_per_item < 2 * processors
    ):
        block_c //= 2
    block_t = min(_TILE_ELEMENTS // block_c, max(16, _next_power_of_2(length)))
    return block_t, block_c


def _geometry(u: torch.Tensor, B: torch.Tensor, fused: bool) -> tuple[int, int, int, int]:
    """(batch, directions K, channels per direction, L) of the op's layouts."""
    if fused:
        batch, length, channels = u.shape
        return batch, B.shape[1], channels, length
    batch, total, length = u.shape
    return batch, B.shape[1], total // B.shape[1], length


def _strides(
    u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor, channels: int, fused: bool
) -> tuple[int, ...]:
    """[batch, direction, position, channel] strides of u (and y, du, dy), delta, and B / C."""
    if fused:  # u (batch, L, C) shared by the directions, delta (K, batch, L, C)
        x = (u.stride(0), 0, u.stride(1), u.stride(2))
        d = (delta.stride(1), delta.stride(0), delta.stride(2), delta.stride(3))
    else:  # u and delta (batch, K * channels, L)
        x = (u.stride(0), channels * u.stride(1), u.stride(2), u.stride(1))
        d = (delta.stride(0), channels * delta.stride(1), delta.stride(2), delta.stride(1))
    return (*x, *d, B.stride(0), B.stride(1), B.stride(2))


def _launch_options(
    kernels: ModuleType,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    fused: bool,
    dtype: torch.dtype,
    block_t: int,
    block_c: int,
    num_chunks: int,
) -> dict[str, Any]:
    # The chunk count is a compile-time constant: the interpreter cannot loop over a run-time
    # integer with numpy 2 (one compiled kernel per sequence length, four in DASS).
    return {
        "NUM_CHUNKS": num_chunks,
        "HAS_D": D is not None,
        "HAS_BIAS": delta_bias is not None,
        "SOFTPLUS": delta_softplus,
        "FUSED": fused,
        "DIRECTIONS": 4 if fused else 1,
        "COMPUTE": kernels.tl.float64 if dtype == torch.float64 else kernels.tl.float32,
        "BLOCK_T": block_t,
        "BLOCK_C": block_c,
        "num_warps": 4,
    }


def _grid(batch: int, directions: int, channels: int, block_c: int, fused: bool) -> tuple:
    return (batch, math.ceil(channels / block_c), 1 if fused else directions)


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan of contiguous inputs; returns (y, states entering every chunk).

    Plain: u, delta (batch, K * Cd, L), B, C (batch, K, L), A, D, delta_bias (K * Cd,).
    Fused SS2D (K = 4, L = height * width): u (batch, L, C), delta (4, batch, L, C), B, C
    (batch, 4, L), A, D, delta_bias (4 * C,); y (batch, L, C) sums the four directions.
    y: u's shape, float32 (float64 for float64 input); states: (batch, K, chunks, Cd).
    """
    kernels = load_kernels()
    batch, directions, channels, length = _geometry(u, B, fused)
    dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
    num_chunks = -(-length // block_t)  # integer maths: SymInt-safe
    y = torch.empty(u.shape, dtype=dtype, device=u.device)
    states = torch.empty((batch, directions, num_chunks, channels), dtype=dtype, device=u.device)
    options = _launch_options(
        kernels, D, delta_bias, delta_softplus, fused, dtype, block_t, block_c, num_chunks
    )
    kernels.scan_forward_kernel[_grid(batch, directions, channels, block_c, fused)](
        u, delta, A, B, C, D if D is not None else A, delta_bias if delta_bias is not None else A,
        y, states,
        length, channels, height, width,
        *_strides(u, delta, B, channels, fused),
        **options,
    )  # fmt: skip
    return y, states


@triton_scan_forward.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, fused, block_t, block_c):
    batch, directions, channels, length = _geometry(u, B, fused)
    dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
    num_chunks = -(-length // block_t)  # integer maths: SymInt-safe
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
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """Gradients (u, delta, A, B, C, D, delta_bias) of `triton_scan_forward`'s y; grad_y is
    contiguous like y. u's gradient is in the compute dtype, delta's in delta's dtype, the others
    in the compute dtype (D's and delta_bias's are sums even when D / delta_bias are None)."""
    kernels = load_kernels()
    batch, directions, channels, length = _geometry(u, B, fused)
    dtype = states.dtype
    num_blocks = math.ceil(channels / block_c)
    grad_u = torch.empty(u.shape, dtype=dtype, device=u.device)
    grad_delta = torch.empty_like(delta)
    part_B = torch.empty((num_blocks, batch, directions, length), dtype=dtype, device=u.device)
    part_C = torch.empty_like(part_B)
    part_A, part_D, part_bias = (
        torch.empty((batch, directions * channels), dtype=dtype, device=u.device) for _ in range(3)
    )
    options = _launch_options(
        kernels, D, delta_bias, delta_softplus, fused, dtype, block_t, block_c, states.shape[2]
    )
    kernels.scan_backward_kernel[_grid(batch, directions, channels, block_c, fused)](
        grad_y, u, delta, A, B, C, D if D is not None else A,
        delta_bias if delta_bias is not None else A, states,
        grad_u, grad_delta, part_B, part_C, part_A, part_D, part_bias,
        length, channels, height, width, batch,
        *_strides(u, delta, B, channels, fused),
        **options,
    )  # fmt: skip
    return (
        grad_u,
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
        block_sizes: (positions, channels) per program tile; None: `default_block_sizes`.

    Returns:
        (batch, channels, L): float64 for float64 input, otherwise float32.
    """
    check_triton_inputs(u, A)
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    batch, total, length = u.shape
    groups = B.shape[1]
    block_t, block_c = block_sizes or default_block_sizes(
        batch, total // groups, length, programs_per_item=groups, device=u.device
    )
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
        block_sizes: (positions, channels) per program tile; None: `default_block_sizes`.

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
    block_t, block_c = block_sizes or default_block_sizes(
        batch, channels, length, programs_per_item=1, device=u.device
    )
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
    )
    return y
