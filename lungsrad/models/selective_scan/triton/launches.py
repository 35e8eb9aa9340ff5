"""The `triton` backend's launches: the three launches of a pass (totals, carry, rescan),
described once for the forward and the backward, with their grids, arguments and options.

What the op runs, and what `benchmarks/triton_static.py` compiles without running.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from lungsrad.models.selective_scan.reference import compute_dtype
from lungsrad.models.selective_scan.triton.availability import load_kernels
from lungsrad.models.selective_scan.triton.launch_plan import (
    LaunchConfig,
    cdiv,
    check_launch,
    next_power_of_2,
)

# Per pass: its totals kernel, its rescan kernel and the rescan launch's name.
_PASS_KERNELS = {
    "forward": ("scan_chunk_totals_kernel", "scan_chunk_output_kernel", "output"),
    "backward": ("scan_adjoint_totals_kernel", "scan_chunk_gradient_kernel", "gradients"),
}


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


def geometry(u: torch.Tensor, B: torch.Tensor, fused: bool) -> tuple[int, int, int, int]:
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


@dataclass(frozen=True)
class ScanPass:
    """One pass of the scan, forward or backward (the adjoint recurrence), as its three
    launches share it:

    1. totals: every chunk's map from a zero state (P, S per channel);
    2. carry: the state entering every chunk, from those maps;
    3. rescan: every chunk again from its entering state, writing the output (forward) or the
       gradients (backward).

    The chunk launches (1 and 3) share the geometry arguments, grid, strides and options; their
    arguments are (tensors..., geometry..., scalars..., strides of u, [strides of the output],
    strides of delta, strides of the gates).
    """

    name: str
    geometry: tuple[int, ...]
    grid: tuple[int, int, int]
    channels: int
    strides_u: tuple[int, int, int, int]
    strides_delta: tuple[int, int, int, int]
    strides_gate: tuple[int, int, int]
    options: dict[str, Any]
    config: LaunchConfig

    @classmethod
    def of(
        cls,
        name: str,
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
    ) -> ScanPass:
        backward = name == "backward"
        batch, directions, channels, length = geometry(u, B, fused)
        lanes = 2 if fused else directions
        block_c = config.backward_block_c if backward else config.block_c
        return cls(
            name=name,
            geometry=(length, channels, height, width, num_chunks, lanes),
            grid=(num_chunks, cdiv(channels, block_c), batch * lanes),
            channels=channels,
            strides_u=_tensor_strides(u, channels, fused),
            strides_delta=_tensor_strides(delta, channels, fused),
            strides_gate=_gate_strides(B),
            options={
                "HAS_BIAS": delta_bias is not None,
                "SOFTPLUS": delta_softplus,
                "FUSED": fused,
                "COMPUTE": compute,
                "BLOCK_T": config.block_t,
                "BLOCK_C": block_c,
                "num_warps": config.backward_num_warps if backward else config.num_warps,
            },
            config=config,
        )

    @property
    def lanes(self) -> int:
        return self.geometry[5]

    @property
    def fused(self) -> bool:
        return bool(self.options["FUSED"])

    def launches(
        self,
        kernels: ModuleType,
        *,
        totals_inputs: tuple,
        maps: tuple[torch.Tensor, torch.Tensor],
        entering: torch.Tensor,
        rescan_tensors: tuple,
        rescan_scalars: tuple = (),
        output: torch.Tensor,
        has_d: bool,
    ) -> list[KernelLaunch]:
        """The pass's three launches.

        Args:
            kernels: the kernel module (`load_kernels()`).
            totals_inputs: the totals kernel's tensors ahead of `maps`.
            maps: (P, S) buffers the totals write and the carry reads, (batch, K, chunks, Cd).
            entering: the carry's output, like each of `maps`.
            rescan_tensors: the rescan kernel's tensors, ahead of the geometry.
            rescan_scalars: its scalars after the geometry.
            output: the tensor it writes at u's layout (y or grad_u), for its strides.
            has_d: whether D is given.
        """
        totals_kernel, rescan_kernel, rescan_name = _PASS_KERNELS[self.name]
        output_strides = _tensor_strides(output, self.channels, self.fused)
        return [
            KernelLaunch(
                f"{self.name} totals",
                getattr(kernels, totals_kernel),
                self.grid,
                (*totals_inputs, *maps, *self.geometry, *self.strides_u, *self.strides_delta,
                 *self.strides_gate),
                self.options,
            ),  # fmt: skip
            _carry_launch(
                kernels, f"{self.name} carry", maps, entering, lanes=self.lanes,
                fused=self.fused, adjoint=self.name == "backward", config=self.config,
            ),  # fmt: skip
            KernelLaunch(
                f"{self.name} {rescan_name}",
                getattr(kernels, rescan_kernel),
                self.grid,
                (*rescan_tensors, *self.geometry, *rescan_scalars, *self.strides_u,
                 *output_strides, *self.strides_delta, *self.strides_gate),
                {**self.options, "HAS_D": has_d},
            ),  # fmt: skip
        ]


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
        (cdiv(channels, block_c), batch * directions, 1),
        (*totals, entering, channels, lanes),
        {
            "FUSED": fused,
            "ADJOINT": adjoint,
            "NUM_CHUNKS": num_chunks,
            "COMPUTE": _compute(kernels, entering.dtype),
            "BLOCK_N": min(config.carry_block, next_power_of_2(num_chunks)),
            "BLOCK_C": block_c,
            "num_warps": config.num_warps,
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
    batch, directions, channels, length = geometry(u, B, fused)
    check_launch(batch, directions, channels, length, fused, config)
    dtype = compute_dtype(u, delta, A, B, C, D, delta_bias)
    num_chunks = cdiv(length, config.block_t)
    y = u.new_zeros(u.shape, dtype=dtype) if fused else u.new_empty(u.shape, dtype=dtype)
    per_chunk = (batch, directions, num_chunks, channels)
    maps = (u.new_empty(per_chunk, dtype=dtype), u.new_empty(per_chunk, dtype=dtype))
    entering = u.new_empty(per_chunk, dtype=dtype)
    scan_pass = ScanPass.of(
        "forward", u, delta, B, delta_bias, delta_softplus, height, width, fused, num_chunks,
        compute=_compute(kernels, dtype), config=config,
    )  # fmt: skip
    bias_or_a = delta_bias if delta_bias is not None else A
    launches = scan_pass.launches(
        kernels,
        totals_inputs=(u, delta, A, B, bias_or_a),
        maps=maps,
        entering=entering,
        rescan_tensors=(u, delta, A, B, C, D if D is not None else A, bias_or_a, entering, y),
        output=y,
        has_d=D is not None,
    )
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
    batch, directions, channels, length = geometry(u, B, fused)
    check_launch(batch, directions, channels, length, fused, config)
    dtype = entering.dtype
    num_chunks = entering.shape[2]
    num_blocks = cdiv(channels, config.backward_block_c)
    grad_u = u.new_zeros(u.shape, dtype=dtype) if fused else u.new_empty(u.shape, dtype=dtype)
    grad_delta = torch.empty_like(delta)
    part_B = u.new_empty((num_blocks, batch, directions, length), dtype=dtype)
    part_C = torch.empty_like(part_B)
    part_A, part_D, part_bias = (
        u.new_empty((num_chunks, batch, directions * channels), dtype=dtype) for _ in range(3)
    )
    adjoint_entering = torch.empty_like(entering)
    scan_pass = ScanPass.of(
        "backward", u, delta, B, delta_bias, delta_softplus, height, width, fused, num_chunks,
        compute=_compute(kernels, dtype), config=config,
    )  # fmt: skip
    bias_or_a = delta_bias if delta_bias is not None else A
    launches = scan_pass.launches(
        kernels,
        totals_inputs=(grad_y, delta, A, C, bias_or_a),
        maps=(torch.empty_like(entering), torch.empty_like(entering)),
        entering=adjoint_entering,
        rescan_tensors=(
            grad_y, u, delta, A, B, C, D if D is not None else A, bias_or_a, entering,
            adjoint_entering, grad_u, grad_delta, part_B, part_C, part_A, part_D, part_bias,
        ),  # fmt: skip
        rescan_scalars=(batch,),
        output=grad_u,
        has_d=D is not None,
    )
    return launches, (grad_u, grad_delta, part_A, part_B, part_C, part_D, part_bias)
