"""The `triton` selective-scan backend: Triton kernels (d_state 1) behind one torch custom op.

`selective_scan_triton` has the reference's signature; `ss2d_scan_triton` also does SS2D's
cross-scan and cross-merge inside the kernels (see `triton_kernels.py`). Both run on CUDA
tensors, or on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1 set before triton is
imported), which is how CI tests them. The op pair `lungsrad::triton_scan_forward` /
`lungsrad::triton_scan_backward` is registered with `torch.library`, so autograd and
torch.compile see one opaque op.
"""

# No `from __future__ import annotations`: torch.library reads the op signatures' annotations.

from dataclasses import dataclass
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

            kernel = triton_kernels.scan_chunk_output_kernel
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


def _cdiv(a: int, b: int) -> int:
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
        block_t = min(16, _next_power_of_2(length))
        block_c = min(8, _next_power_of_2(channels))
        return LaunchConfig(block_t, block_c, block_c, 4, block_c, NUM_WARPS, NUM_WARPS)
    lanes = 2 if fused else directions
    block_c = min(_MAX_BLOCK_C, _next_power_of_2(channels))
    block_t = max(_MIN_BLOCK_T, min(_TILE_ELEMENTS // block_c, _next_power_of_2(length)))
    while (
        block_t > _MIN_BLOCK_T
        and _cdiv(length, block_t) * _cdiv(channels, block_c) * batch * lanes
        < _PROGRAMS_PER_PROCESSOR * processors
    ):
        block_t //= 2
    backward_block_c = max(1, min(block_c, _BACKWARD_TILE_ELEMENTS // block_t))
    carry_block = min(_MAX_CARRY_BLOCK, _next_power_of_2(_cdiv(length, block_t)))
    carry_block_c = min(_CARRY_BLOCK_C, block_c)
    return LaunchConfig(
        block_t, block_c, backward_block_c, carry_block, carry_block_c, NUM_WARPS, NUM_WARPS
    )


def default_launch(
    batch: int, channels: int, length: int, *, directions: int, fused: bool, device: torch.device
) -> LaunchConfig:
    """`plan_launch` for tensors on `device` (the interpreter's small tiles off CUDA)."""
    processors = _processor_count(device) if device.type == "cuda" else None
    return plan_launch(
        batch, channels, length, directions=directions, fused=fused, processors=processors
    )


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel launch of a scan, as the op runs it (and `benchmarks/triton_static.py`
    compiles it): the kernel, its grid, positional arguments and keyword options."""

    name: str
    kernel: Any
    grid: tuple[int, int, int]
    args: tuple
    options: dict[str, Any]

    def run(self) -> None:
        self.kernel[self.grid](*self.args, **self.options)


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


def _tensor_strides(t: torch.Tensor, channels: int, fused: bool) -> tuple[int, int, int, int]:
    """[batch, direction, position, channel] strides of u, y or delta (plain: direction k is
    the k-th group of `channels` rows of a (batch, K * channels, L) tensor)."""
    if fused:
        return _map_strides(t)
    return (t.stride(0), channels * t.stride(1), t.stride(2), t.stride(1))


def _gate_strides(B: torch.Tensor) -> tuple[int, int, int]:
    return (B.stride(0), B.stride(1), B.stride(2))


def _compute(kernels: ModuleType, dtype: torch.dtype) -> Any:
    return kernels.tl.float64 if dtype == torch.float64 else kernels.tl.float32


def _check_launch(
    batch: int, directions: int, channels: int, length: int, fused: bool, config: LaunchConfig
) -> None:
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
        _cdiv(length, config.block_t),
        _cdiv(channels, min(config.block_c, config.backward_block_c, config.carry_block_c)),
        batch * lanes,
    )
    # CUDA's limits: 2**31 - 1 programs along the first grid dimension, 65535 along the others.
    if grid[0] >= 2**31 or max(grid[1:]) > 65535 or batch * directions > 65535:
        raise UserError(
            f"selective scan backend 'triton' cannot launch {directions} channel groups of "
            f"{channels} channels over {length} steps for batch {batch} (grid {grid}); use "
            "backend 'chunked' for this shape"
        )


def _carry_launch(
    kernels: ModuleType,
    name: str,
    totals: tuple[torch.Tensor, torch.Tensor],
    entering: torch.Tensor,
    *,
    lanes: int,
    fused: bool,
    adjoint: bool,
    config: LaunchConfig,
) -> KernelLaunch:
    batch, directions, num_chunks, channels = entering.shape
    block_c = config.carry_block_c
    return KernelLaunch(
        name,
        kernels.scan_chunk_carry_kernel,
        (_cdiv(channels, block_c), batch * directions, 1),
        (*totals, entering, channels, lanes),
        {
            "FUSED": fused,
            "ADJOINT": adjoint,
            "NUM_CHUNKS": num_chunks,
            "COMPUTE": _compute(kernels, entering.dtype),
            "BLOCK_N": min(config.carry_block, _next_power_of_2(num_chunks)),
            "BLOCK_C": block_c,
            "num_warps": config.num_warps,
        },
    )


@dataclass(frozen=True)
class _ChunkPass:
    """What the chunk launches of one pass share: the kernels' geometry arguments, grid,
    strides and options."""

    geometry: tuple[int, ...]
    grid: tuple[int, int, int]
    strides_u: tuple[int, int, int, int]
    strides_delta: tuple[int, int, int, int]
    options: dict[str, Any]

    @classmethod
    def of(
        cls,
        u: torch.Tensor,
        delta: torch.Tensor,
        B: torch.Tensor,
        delta_bias: torch.Tensor | None,
        delta_softplus: bool,
        height: int,
        width: int,
        fused: bool,
        num_chunks: int,
        *,
        compute: Any,
        config: LaunchConfig,
        backward: bool,
    ) -> "_ChunkPass":
        batch, directions, channels, length = _geometry(u, B, fused)
        lanes = 2 if fused else directions
        block_c = config.backward_block_c if backward else config.block_c
        return cls(
            geometry=(length, channels, height, width, num_chunks, lanes),
            grid=(num_chunks, _cdiv(channels, block_c), batch * lanes),
            strides_u=_tensor_strides(u, channels, fused),
            strides_delta=_tensor_strides(delta, channels, fused),
            options={
                "HAS_BIAS": delta_bias is not None,
                "SOFTPLUS": delta_softplus,
                "FUSED": fused,
                "COMPUTE": compute,
                "BLOCK_T": config.block_t,
                "BLOCK_C": block_c,
                "num_warps": config.backward_num_warps if backward else config.num_warps,
            },
        )


def forward_launches(
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
    config: LaunchConfig,
) -> tuple[list[KernelLaunch], torch.Tensor, torch.Tensor]:
    """The forward's launches over contiguous inputs (the op's layouts, see
    `triton_scan_forward`), with the outputs they write: (launches, y, entering states).

    y is zeroed here when the lanes add into it (fused)."""
    kernels = load_kernels()
    batch, directions, channels, length = _geometry(u, B, fused)
    _check_launch(batch, directions, channels, length, fused, config)
    dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
    lanes = 2 if fused else directions
    num_chunks = _cdiv(length, config.block_t)
    y = u.new_zeros(u.shape, dtype=dtype) if fused else u.new_empty(u.shape, dtype=dtype)
    per_chunk = (batch, directions, num_chunks, channels)
    totals = (u.new_empty(per_chunk, dtype=dtype), u.new_empty(per_chunk, dtype=dtype))
    entering = u.new_empty(per_chunk, dtype=dtype)
    chunk_pass = _ChunkPass.of(
        u, delta, B, delta_bias, delta_softplus, height, width, fused, num_chunks,
        compute=_compute(kernels, dtype), config=config, backward=False,
    )  # fmt: skip
    geometry, grid, common = chunk_pass.geometry, chunk_pass.grid, chunk_pass.options
    strides_u, strides_delta = chunk_pass.strides_u, chunk_pass.strides_delta
    bias_or_a = delta_bias if delta_bias is not None else A
    launches = [
        KernelLaunch(
            "forward totals",
            kernels.scan_chunk_totals_kernel,
            grid,
            (u, delta, A, B, bias_or_a, *totals, *geometry,
             *strides_u, *strides_delta, *_gate_strides(B)),
            common,
        ),  # fmt: skip
        _carry_launch(
            kernels, "forward carry", totals, entering, lanes=lanes, fused=fused,
            adjoint=False, config=config,
        ),  # fmt: skip
        KernelLaunch(
            "forward output",
            kernels.scan_chunk_output_kernel,
            grid,
            (u, delta, A, B, C, D if D is not None else A, bias_or_a, entering, y, *geometry,
             *strides_u, *_tensor_strides(y, channels, fused), *strides_delta,
             *_gate_strides(B)),
            {**common, "HAS_D": D is not None},
        ),  # fmt: skip
    ]
    return launches, y, entering


def backward_launches(
    grad_y: torch.Tensor,
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    entering: torch.Tensor,
    delta_softplus: bool,
    height: int,
    width: int,
    fused: bool,
    config: LaunchConfig,
) -> tuple[list[KernelLaunch], tuple[torch.Tensor, ...]]:
    """The backward's launches and the buffers they write: (launches, (grad_u, grad_delta,
    part_A, part_B, part_C, part_D, part_bias)); the parts are summed by the caller over their
    first dimension (part_A/D/bias over the first two)."""
    kernels = load_kernels()
    batch, directions, channels, length = _geometry(u, B, fused)
    _check_launch(batch, directions, channels, length, fused, config)
    dtype = entering.dtype
    lanes = 2 if fused else directions
    num_chunks = entering.shape[2]
    block_c = config.backward_block_c
    num_blocks = _cdiv(channels, block_c)
    grad_u = u.new_zeros(u.shape, dtype=dtype) if fused else u.new_empty(u.shape, dtype=dtype)
    grad_delta = torch.empty_like(delta)
    part_B = u.new_empty((num_blocks, batch, directions, length), dtype=dtype)
    part_C = torch.empty_like(part_B)
    part_A, part_D, part_bias = (
        u.new_empty((num_chunks, batch, directions * channels), dtype=dtype) for _ in range(3)
    )
    totals = (torch.empty_like(entering), torch.empty_like(entering))
    adjoint_entering = torch.empty_like(entering)
    chunk_pass = _ChunkPass.of(
        u, delta, B, delta_bias, delta_softplus, height, width, fused, num_chunks,
        compute=_compute(kernels, dtype), config=config, backward=True,
    )  # fmt: skip
    geometry, grid, common = chunk_pass.geometry, chunk_pass.grid, chunk_pass.options
    strides_u, strides_delta = chunk_pass.strides_u, chunk_pass.strides_delta
    bias_or_a = delta_bias if delta_bias is not None else A
    launches = [
        KernelLaunch(
            "backward totals",
            kernels.scan_adjoint_totals_kernel,
            grid,
            (grad_y, delta, A, C, bias_or_a, *totals, *geometry,
             *strides_u, *strides_delta, *_gate_strides(B)),
            common,
        ),  # fmt: skip
        _carry_launch(
            kernels, "backward carry", totals, adjoint_entering, lanes=lanes, fused=fused,
            adjoint=True, config=config,
        ),  # fmt: skip
        KernelLaunch(
            "backward gradients",
            kernels.scan_chunk_gradient_kernel,
            grid,
            (grad_y, u, delta, A, B, C, D if D is not None else A, bias_or_a, entering,
             adjoint_entering, grad_u, grad_delta, part_B, part_C, part_A, part_D, part_bias,
             *geometry, batch, *strides_u, *_tensor_strides(grad_u, channels, fused),
             *strides_delta, *_gate_strides(B)),
            {**common, "HAS_D": D is not None},
        ),  # fmt: skip
    ]
    return launches, (grad_u, grad_delta, part_A, part_B, part_C, part_D, part_bias)


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
    launch: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scan of contiguous inputs; returns (y, states entering every chunk).

    Plain: u, delta (batch, K * Cd, L), B, C (batch, K, L), A, D, delta_bias (K * Cd,).
    Fused SS2D (K = 4, L = height * width): u (batch, L, C), delta (4, batch, L, C), B, C
    (batch, 4, L), A, D, delta_bias (4 * C,); y (batch, L, C) sums the four directions.
    y: u's shape, float32 (float64 for float64 input); states: (batch, K, chunks, Cd).
    launch: `LaunchConfig.as_ints()`.
    """
    launches, y, entering = forward_launches(
        u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, fused,
        LaunchConfig(*launch),
    )  # fmt: skip
    for kernel_launch in launches:
        kernel_launch.run()
    return y, entering


@triton_scan_forward.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, fused, launch):
    batch, directions, channels, length = _geometry(u, B, fused)
    dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
    num_chunks = _cdiv(length, launch[0])
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
    launch: list[int],
) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """Gradients (u, delta, A, B, C, D, delta_bias) of `triton_scan_forward`'s y; grad_y is
    contiguous like y. u's gradient is in the compute dtype, delta's in delta's dtype, the others
    in the compute dtype (D's and delta_bias's are sums even when D / delta_bias are None)."""
    launches, buffers = backward_launches(
        grad_y, u, delta, A, B, C, D, delta_bias, states, delta_softplus, height, width, fused,
        LaunchConfig(*launch),
    )  # fmt: skip
    for kernel_launch in launches:
        kernel_launch.run()
    grad_u, grad_delta, part_A, part_B, part_C, part_D, part_bias = buffers
    return (
        grad_u,
        grad_delta,
        part_A.sum((0, 1)),
        part_B.sum(0),
        part_C.sum(0),
        part_D.sum((0, 1)),
        part_bias.sum((0, 1)),
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
    launch: LaunchConfig | None = None,
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
        launch: tiles and warps; None: `default_launch`'s.

    Returns:
        (batch, channels, L): float64 for float64 input, otherwise float32.
    """
    check_triton_inputs(u, A)
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    batch, total, length = u.shape
    groups = B.shape[1]
    launch = launch or default_launch(
        batch, total // groups, length, directions=groups, fused=False, device=u.device
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
        launch.as_ints(),
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
    launch: LaunchConfig | None = None,
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
        launch: tiles and warps; None: `default_launch`'s.

    Returns:
        (batch, L, C): the four directions summed, float64 for float64 input, else float32.
    """
    check_triton_inputs(u, A)
    y, _ = triton_scan_forward(
        *ss2d_scan_arguments(
            u, delta, A, B, C, D, delta_bias, height=height, width=width,
            delta_softplus=delta_softplus, launch=launch,
        )
    )  # fmt: skip
    return y


def ss2d_scan_arguments(
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
    launch: LaunchConfig | None = None,
) -> tuple:
    """The positional arguments `ss2d_scan_triton` gives `triton_scan_forward` (contiguous
    inputs, flat parameters, the launch plan); works on any device, the meta device included."""
    batch, length, channels = u.shape
    if length != height * width or delta.shape != (4, batch, length, channels):
        raise ValueError(
            f"ss2d_scan_triton: u (batch, {height} x {width}, C) and delta (4, batch, L, C) "
            f"expected, got {tuple(u.shape)} and {tuple(delta.shape)}"
        )
    launch = launch or default_launch(
        batch, channels, length, directions=4, fused=True, device=u.device
    )
    return (
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
        launch.as_ints(),
    )
