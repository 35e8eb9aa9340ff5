"""GPU selective-scan benchmark on DASS-small SS2D shapes: chunked vs triton vs mamba_ssm.

For each stage map of DASS-small at batch 16 on an ICBHI segment (128 mel x 798 frames: C 96 on
32 x 199, 192 on 16 x 100, 384 on 8 x 50, 768 on 4 x 25) it measures, side by side in one run:
- `SS2D <backend>`: the whole SS2D block (projections, scan, cross-merge, norm, out_proj);
  for `triton` that is the fused path (no cross_scan copies);
- `scan <backend>`: the bare scan on cross-scanned (batch, 4C, L) inputs; `scan triton-fused`
  is the fused op on the map's own layout (it also does cross_scan and cross_merge);
with forward (no grad) and forward+backward milliseconds (median of --repeats after warm-up),
the peak memory of forward+backward, and, from one profiled forward+backward, the number of GPU
kernels launched and the share of the wall time the GPU was busy (under the profiler).
mamba_ssm appears only where it is installed.

    python benchmarks/scan_gpu.py                          # bf16 autocast, batch 16, all stages
    python benchmarks/scan_gpu.py --dtype float32 --stages 0 --block-sizes 128 8
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch

from lungsrad.models.dass import SS2D
from lungsrad.models.selective_scan import (
    available_backends,
    selective_scan,
    selective_scan_triton,
    ss2d_scan_triton,
)

STAGES = [(96, 32, 199), (192, 16, 100), (384, 8, 50), (768, 4, 25)]  # (C, H, W)
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(2):  # warm-up: Triton compiles on the first call
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def launches_and_busy(fn: Callable[[], object]) -> tuple[int, float]:
    """(GPU kernels and copies launched, GPU-busy share of the wall time) of one call."""
    torch.cuda.synchronize()
    activity = torch.profiler.ProfilerActivity
    # CUDA alone keeps the profiler's own CPU overhead out of the wall time, where supported.
    activities = [activity.CUDA]
    if activity.CUDA not in torch.profiler.supported_activities():
        activities.append(activity.CPU)
    with torch.profiler.profile(activities=activities) as profile:
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    on_gpu = [e for e in profile.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_us = sum(e.device_time_total for e in on_gpu)
    return sum(e.count for e in on_gpu), busy_us / wall_us


def peak_gib(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def scan_inputs(
    batch: int, channels: int, length: int, dtype: torch.dtype, *, fused: bool
) -> list[torch.Tensor]:
    """DASS-like scan inputs (softplus(bias) in [1e-3, 0.1], A = -1 .. -4), requiring grad.

    Plain: u, delta (batch, 4C, L), B, C (batch, 4, 1, L). Fused: u (batch, L, C),
    delta (4, batch, L, C), B, C (batch, 4, L).
    """
    device = "cuda"
    scanned = 4 * channels
    dt = torch.exp(torch.empty(scanned, device=device).uniform_(math.log(1e-3), math.log(0.1)))
    if fused:
        u = torch.randn(batch, length, channels, device=device, dtype=dtype)
        delta = 0.5 * torch.randn(4, batch, length, channels, device=device, dtype=dtype)
        gate_shape: tuple[int, ...] = (batch, 4, length)
    else:
        u = torch.randn(batch, scanned, length, device=device, dtype=dtype)
        delta = 0.5 * torch.randn(batch, scanned, length, device=device, dtype=dtype)
        gate_shape = (batch, 4, 1, length)
    tensors = [
        u,
        delta,
        -torch.empty(scanned, 1, device=device).uniform_(1.0, 4.0),
        torch.randn(gate_shape, device=device, dtype=dtype),
        torch.randn(gate_shape, device=device, dtype=dtype),
        torch.ones(scanned, device=device),
        dt + torch.log(-torch.expm1(-dt)),
    ]
    return [t.requires_grad_() for t in tensors]


Cases = dict[str, tuple[Callable[[], torch.Tensor], torch.Tensor]]


def scan_cases(channels: int, height: int, width: int, args: argparse.Namespace) -> Cases:
    """name -> (forward, gradient of its output) for the bare scans."""
    dtype, length = DTYPES[args.dtype], height * width
    cases: Cases = {}
    u, delta, A, B, C, D, bias = scan_inputs(args.batch_size, channels, length, dtype, fused=False)
    gradient = torch.randn_like(u, dtype=torch.float32)
    for backend in args.backends:
        if backend == "triton":
            forward = functools.partial(
                selective_scan_triton, u, delta, A, B, C, D, bias, block_sizes=args.block_sizes
            )
        else:
            forward = functools.partial(selective_scan, u, delta, A, B, C, D, bias, backend=backend)
        cases[f"scan {backend}"] = (forward, gradient)
    if "triton" in args.backends:
        u, delta, A, B, C, D, bias = scan_inputs(
            args.batch_size, channels, length, dtype, fused=True
        )
        fused = functools.partial(
            ss2d_scan_triton,
            u,
            delta,
            A,
            B,
            C,
            D,
            bias,
            height=height,
            width=width,
            block_sizes=args.block_sizes,
        )
        cases["scan triton-fused"] = (fused, torch.randn_like(u, dtype=torch.float32))
    return cases


def run_ss2d(module: SS2D, x: torch.Tensor, use_bf16: bool) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
        return module(x)


def ss2d_cases(channels: int, height: int, width: int, args: argparse.Namespace) -> Cases:
    """name -> (forward, gradient of its output) for the SS2D block, one module per backend
    with the same weights."""
    torch.manual_seed(0)
    reference = SS2D(channels).cuda()
    x = torch.randn(args.batch_size, channels, height, width, device="cuda")
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    gradient = torch.randn(args.batch_size, channels, height, width, device="cuda")
    cases: Cases = {}
    for backend in args.backends:
        module = SS2D(channels, scan_backend=backend).cuda()
        module.load_state_dict(reference.state_dict())
        forward = functools.partial(run_ss2d, module, x, args.dtype == "bfloat16")
        cases[f"SS2D {backend}"] = (forward, gradient)
    return cases


def measure(
    name: str, forward: Callable[[], torch.Tensor], grad: torch.Tensor, repeats: int
) -> list[str]:
    def forward_only() -> None:
        with torch.no_grad():
            forward()

    def forward_backward() -> None:
        y = forward()
        y.backward(grad.to(y.dtype))

    timings = [median_ms(forward_only, repeats), median_ms(forward_backward, repeats)]
    launches, busy = launches_and_busy(forward_backward)  # after the warm-up (compilation)
    return [
        name,
        *(f"{ms:9.3f}" for ms in timings),
        f"{peak_gib(forward_backward):7.3f}",
        f"{launches:8d}",
        f"{100 * busy:6.1f}",
    ]


def agreement(cases: Cases, names: list[str]) -> str:
    """max |y - y_chunked| / max |y_chunked| of the SS2D outputs, per backend."""
    with torch.no_grad():
        outputs = {n: cases[n][0]().float() for n in names}
    base = outputs.get("SS2D chunked")
    if base is None:
        return ""
    scale = base.abs().max()
    parts = [f"{n}: {((y - base).abs().max() / scale).item():.1e}" for n, y in outputs.items()]
    return "SS2D outputs vs chunked (max abs diff / max abs): " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument(
        "--block-sizes",
        type=int,
        nargs=2,
        default=None,
        metavar=("POSITIONS", "CHANNELS"),
        help="triton tile (powers of 2) for the bare-scan rows; default: the heuristic",
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("scan_gpu.py: needs a CUDA device (torch sees none)", file=sys.stderr)
        sys.exit(2)
    if any(not 0 <= s < len(STAGES) for s in args.stages):
        print(f"scan_gpu.py: --stages must be within 0..{len(STAGES) - 1}", file=sys.stderr)
        sys.exit(2)
    args.backends = [b for b in ("chunked", "mamba_ssm", "triton") if b in available_backends()]
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch_size}, "
        f"{args.dtype}, backends {args.backends}"
    )
    header = ["case", "fwd ms", "fwd+bwd ms", "peak GiB", "launches", "busy %"]
    for stage in args.stages:
        channels, height, width = STAGES[stage]
        print(f"\nstage {stage}: C {channels}, map {height} x {width} (L = {height * width})")
        print(f"{header[0]:<20}" + "".join(f"{h:>11}" for h in header[1:]))
        ss2d = ss2d_cases(channels, height, width, args)
        for cases in (ss2d, scan_cases(channels, height, width, args)):
            for name, (forward, grad) in cases.items():
                row = measure(name, forward, grad, args.repeats)
                print(f"{row[0]:<20}" + "".join(f"{c:>11}" for c in row[1:]))
        print(agreement(ss2d, list(ss2d)))


if __name__ == "__main__":
    main()
