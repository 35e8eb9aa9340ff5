"""GPU selective-scan benchmark on the DASS stage maps: every scan backend side by side.

The stage maps come from the model (`DASS.stage_maps` on an ICBHI segment, the data config's
798 frames x 128 mel bins): for DASS-small at batch 16 they are 96 ch on 32 x 200, 192 on
16 x 100, 384 on 8 x 50 and 768 on 4 x 25. For each stage, in one run:
- `SS2D <backend>`: the whole SS2D block (projections, scan, cross-merge, norm, out_proj), the
  same weights for every backend; for `triton` that is the fused path (no cross_scan copies);
- `scan <backend>`: the bare scan on cross-scanned (batch, 4C, L) inputs; `scan triton-fused` is
  `ss2d_scan_triton` on the map's own layout (it also does the cross-scan and cross-merge);
forward (no grad) and forward+backward (`torch.autograd.grad`: nothing accumulates in `.grad`).

Each time is the median, in ms, of one call timed between CUDA events by
`triton.testing.do_bench`, which flushes the L2 cache before every call (so the GPU is busy when
the call is enqueued and its inputs come from memory): `graph` replays the call captured as a
CUDA graph (GPU time alone, no host launch overhead); `eager` launches it from Python, as an
uncaptured training step does (host overhead shows where the host cannot stay ahead of the
GPU). Ratios, side by side:
- `x chunked`: the chunked row's forward+backward graph time over this row's (>1: faster);
- `busy %`: forward+backward graph time over eager time (the share of an eager call with GPU work);
- `floor ms`: the bytes a scan must move (inputs read and output written; for the backward also
  the output gradient read, the inputs read again and a gradient written per input) at the
  device's memory bandwidth, forward+backward; `floor %` is it over the graph time.
`extra GiB` is what one forward+backward call allocates above what was allocated before it;
`kernels` the kernels and copies one eager forward+backward launches (torch.profiler).

    python benchmarks/scan_gpu.py                      # DASS-small, batch 16, bf16, all stages
    python benchmarks/scan_gpu.py --dtype float32 --stages 0 3 --backends chunked triton
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lungsrad.config import DataConfig
from lungsrad.data.features import expected_num_frames
from lungsrad.errors import first_line
from lungsrad.models import DASS
from lungsrad.models.dass import SS2D
from lungsrad.models.selective_scan import available_backends, selective_scan, ss2d_scan_triton
from lungsrad.training.train_step import autocast_context

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
BACKEND_ORDER = ("chunked", "mamba_ssm", "triton")  # the first one is the ratios' base


@dataclass
class Case:
    """One benchmarked call: `forward()` returns the output of `inputs` (all requiring grad)."""

    name: str
    forward: Callable[[], torch.Tensor]
    inputs: list[torch.Tensor]
    grad_output: torch.Tensor = field(init=False)
    has_floor: bool = True  # the bytes-moved floor is meaningful (bare scans only)

    def __post_init__(self) -> None:
        with torch.no_grad():
            output = self.forward()  # also compiles the Triton kernels of this shape
        # The same seed for every case: outputs of one shape get the same gradient to compare.
        generator = torch.Generator(device=output.device).manual_seed(2)
        self.grad_output = torch.randn(
            output.shape, generator=generator, device=output.device, dtype=output.dtype
        )

    def forward_only(self) -> torch.Tensor:
        with torch.no_grad():
            return self.forward()

    def forward_backward(self) -> tuple[torch.Tensor, ...]:
        output = self.forward()
        return torch.autograd.grad(output, self.inputs, self.grad_output)

    def floor_bytes(self) -> tuple[int, int]:
        """(forward, forward+backward) bytes a scan must move at least: read the inputs and
        write the output; the backward reads the output gradient and the inputs again and
        writes a gradient for each input."""
        inputs = sum(t.numel() * t.element_size() for t in self.inputs)
        output = self.grad_output.numel() * self.grad_output.element_size()
        forward = inputs + output
        return forward, forward + output + 2 * inputs


@dataclass
class Row:
    name: str
    forward_graph_ms: float = float("nan")
    forward_eager_ms: float = float("nan")
    backward_graph_ms: float = float("nan")  # forward+backward
    backward_eager_ms: float = float("nan")
    floor_ms: float = float("nan")  # forward+backward
    extra_gib: float = float("nan")
    kernels: float = float("nan")
    error: str = ""  # the row failed
    capture_error: str = ""  # the eager figures stand, the graph ones failed


def stage_maps(preset: str, frames: int, mel_bins: int) -> list[tuple[int, int, int]]:
    """(channels, height, width) of each stage's map, from the model's own convs (meta device:
    nothing is allocated)."""
    with torch.device("meta"):
        model = getattr(DASS, preset)()
    return model.stage_maps(frames, mel_bins)


def scan_inputs(
    batch: int,
    channels: int,
    length: int,
    dtype: torch.dtype,
    *,
    fused: bool,
    device: torch.device,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """DASS-like scan inputs (softplus(bias) in [1e-3, 0.1], A = -1 .. -4), requiring grad.

    Plain: u, delta (batch, 4C, L), B, C (batch, 4, 1, L). Fused: u (batch, L, C),
    delta (4, batch, L, C), B, C (batch, 4, L). A (4C, 1), D and delta_bias (4C,) float32.
    """
    scanned = 4 * channels

    def randn(*shape: int, scale: float = 1.0, kind: torch.dtype = dtype) -> torch.Tensor:
        values = torch.randn(*shape, generator=generator, device=device) * scale
        return values.to(kind)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        values = torch.rand(*shape, generator=generator, device=device)
        return low + (high - low) * values

    dt = torch.exp(uniform(math.log(1e-3), math.log(0.1), scanned))
    if fused:
        u, delta = randn(batch, length, channels), randn(4, batch, length, channels, scale=0.5)
        gate_shape: tuple[int, ...] = (batch, 4, length)
    else:
        u, delta = randn(batch, scanned, length), randn(batch, scanned, length, scale=0.5)
        gate_shape = (batch, 4, 1, length)
    tensors = [
        u,
        delta,
        -uniform(1.0, 4.0, scanned, 1),
        randn(*gate_shape),
        randn(*gate_shape),
        torch.ones(scanned, device=device),
        dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
    ]
    return [t.requires_grad_() for t in tensors]


def scan_cases(
    channels: int,
    height: int,
    width: int,
    *,
    batch: int,
    dtype: torch.dtype,
    backends: Sequence[str],
    device: torch.device,
) -> list[Case]:
    """The bare scans: `scan <backend>` on cross-scanned inputs, `scan triton-fused` on the map's
    layout (when `triton` is among the backends)."""
    generator = torch.Generator(device=device).manual_seed(0)
    length = height * width
    plain = scan_inputs(
        batch, channels, length, dtype, fused=False, device=device, generator=generator
    )
    cases = []
    for backend in backends:

        def forward(backend: str = backend) -> torch.Tensor:
            return selective_scan(*plain, delta_softplus=True, backend=backend)

        cases.append(Case(f"scan {backend}", forward, plain))
    if "triton" in backends:
        fused = scan_inputs(
            batch, channels, length, dtype, fused=True, device=device, generator=generator
        )

        def forward_fused() -> torch.Tensor:
            return ss2d_scan_triton(*fused, height=height, width=width)

        cases.append(Case("scan triton-fused", forward_fused, fused))
    return cases


def ss2d_cases(
    channels: int,
    height: int,
    width: int,
    *,
    batch: int,
    dtype: torch.dtype,
    backends: Sequence[str],
    device: torch.device,
) -> list[Case]:
    """One SS2D block per backend, the same weights, input channels-last like in DASS; under
    bf16 autocast (cache off, as for a captured step) when `dtype` is bfloat16."""
    torch.manual_seed(0)
    base = SS2D(channels).to(device)
    generator = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(batch, channels, height, width, generator=generator, device=device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    amp_dtype = torch.bfloat16 if dtype == torch.bfloat16 else None
    cases = []
    for backend in backends:
        module = SS2D(channels, scan_backend=backend).to(device)
        module.load_state_dict(base.state_dict())

        def forward(module: SS2D = module) -> torch.Tensor:
            with autocast_context(device, amp_dtype, cache_enabled=False):
                return module(x)

        cases.append(Case(f"SS2D {backend}", forward, [x, *module.parameters()], has_floor=False))
    return cases


def agreement(cases: Sequence[Case]) -> str:
    """max |a - a_base| / max |a_base| of the outputs and of the first input's gradient, against
    the first case, for the cases fed the same first input (the fused scan has its own)."""
    base = cases[0]
    same_input = [case for case in cases if case.inputs[0] is base.inputs[0]]
    outputs = {case.name: case.forward_only().float() for case in same_input}
    gradients = {case.name: case.forward_backward()[0].float() for case in same_input}

    def error(values: dict[str, torch.Tensor], name: str) -> float:
        reference = values[base.name]
        return ((values[name] - reference).abs().max() / reference.abs().max()).item()

    parts = [
        f"{case.name}: y {error(outputs, case.name):.1e}, grad {error(gradients, case.name):.1e}"
        for case in same_input[1:]
    ]
    return f"  vs {base.name} (max abs diff / max abs): " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Measuring (CUDA only)


def capture(fn: Callable[[], object]) -> torch.cuda.CUDAGraph:
    """One call of `fn` captured as a CUDA graph, after warm-up calls on a side stream (the
    order torch.cuda.graph's documentation asks for); warm-up and capture share that stream, so
    per-stream library state (cuBLAS workspaces) exists before the capture."""
    side, main = torch.cuda.Stream(), torch.cuda.current_stream()
    side.wait_stream(main)
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    main.wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        fn()
    torch.cuda.synchronize()
    return graph


def median_ms(fn: Callable[[], object], args: argparse.Namespace) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms, return_mode="median"))


def captured_ms(fn: Callable[[], object], args: argparse.Namespace) -> float:
    graph = capture(fn)
    try:
        return median_ms(graph.replay, args)
    finally:
        del graph
        torch.cuda.synchronize()


def extra_gib(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del result
    return (peak - before) / 2**30


def kernels_per_call(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    activity = torch.profiler.ProfilerActivity
    with torch.profiler.profile(activities=[activity.CPU, activity.CUDA]) as profile:
        fn()
        torch.cuda.synchronize()
    cuda = torch.autograd.DeviceType.CUDA
    return sum(event.count for event in profile.key_averages() if event.device_type == cuda)


def measure(case: Case, args: argparse.Namespace) -> Row:
    """Eager figures first: a call that cannot be captured still gets them (and says why)."""
    row = Row(case.name)
    row.forward_eager_ms = median_ms(case.forward_only, args)
    row.backward_eager_ms = median_ms(case.forward_backward, args)
    row.extra_gib = extra_gib(case.forward_backward)
    row.kernels = kernels_per_call(case.forward_backward)
    if case.has_floor:
        row.floor_ms = case.floor_bytes()[1] / args.bandwidth_bytes_per_second * 1e3
    try:
        row.forward_graph_ms = captured_ms(case.forward_only, args)
        row.backward_graph_ms = captured_ms(case.forward_backward, args)
    except Exception as error:
        traceback.print_exc()
        row.capture_error = one_line(error)
    return row


# ---------------------------------------------------------------------------------------------
# Printing


COLUMNS = (
    ("case", "<20", ""),
    ("fwd graph", ">10", ".3f"),
    ("fwd eager", ">10", ".3f"),
    ("f+b graph", ">10", ".3f"),
    ("f+b eager", ">10", ".3f"),
    ("x chunked", ">10", ".2f"),
    ("busy %", ">7", ".0f"),
    ("floor ms", ">9", ".3f"),
    ("floor %", ">8", ".0f"),
    ("extra GiB", ">10", ".2f"),
    ("kernels", ">8", ".0f"),
)


def header() -> str:
    return " ".join(format(name, align) for name, align, _ in COLUMNS)


def format_row(row: Row, base_ms: float) -> str:
    if row.error:
        return f"{row.name:<20} FAILED: {row.error}"
    values = [
        row.name,
        row.forward_graph_ms,
        row.forward_eager_ms,
        row.backward_graph_ms,
        row.backward_eager_ms,
        base_ms / row.backward_graph_ms,
        100 * row.backward_graph_ms / row.backward_eager_ms,
        row.floor_ms,
        100 * row.floor_ms / row.backward_graph_ms,
        row.extra_gib,
        row.kernels,
    ]
    cells = []
    for value, (_, align, pattern) in zip(values, COLUMNS, strict=True):
        if isinstance(value, float) and value != value:  # NaN: not measured / not meaningful
            value = "-"
        cells.append(format(value, align if isinstance(value, str) else align + pattern))
    return " ".join(cells)


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error, empty='')}"


# ---------------------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("small", "medium"), default="small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument(
        "--stages", type=int, nargs="+", default=None, help="default: every stage (0 first)"
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKEND_ORDER,
        default=None,
        help="default: every one available here (mamba_ssm only where it is installed)",
    )
    parser.add_argument(
        "--rep-ms", type=float, default=100.0, help="do_bench's timed milliseconds per figure"
    )
    parser.add_argument(
        "--warmup-ms", type=float, default=25.0, help="do_bench's warm-up milliseconds"
    )
    parser.add_argument(
        "--bandwidth-tbs",
        type=float,
        default=None,
        help="memory bandwidth of the floor in TB/s; default: the device's (memory clock x bus)",
    )
    data = DataConfig()
    parser.add_argument("--frames", type=int, default=expected_num_frames(data))
    parser.add_argument("--mel-bins", type=int, default=data.num_mel_bins)
    return parser.parse_args(argv)


def require_cuda() -> None:
    if not torch.cuda.is_available():
        print(
            f"scan_gpu.py: no CUDA device visible to torch (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda}); run it on a GPU host with a CUDA build of torch",
            file=sys.stderr,
        )
        sys.exit(2)


def device_bandwidth() -> tuple[float, str]:
    """(bytes/s, how it was found) of the current device's memory: double data rate x memory
    clock x bus width."""
    properties = torch.cuda.get_device_properties(torch.cuda.current_device())
    clock_hz, bus_bits = properties.memory_clock_rate * 1e3, properties.memory_bus_width
    if clock_hz <= 0 or bus_bits <= 0:  # not reported (some virtualised devices): no floor
        return float("nan"), "the device reports no memory clock: pass --bandwidth-tbs"
    return 2 * clock_hz * bus_bits / 8, f"{clock_hz / 1e6:.0f} MHz x {bus_bits}-bit bus x 2"


def chosen_backends(requested: list[str] | None) -> list[str]:
    available = available_backends()
    if requested is None:
        return [name for name in BACKEND_ORDER if name in available]
    missing = [name for name in requested if name not in available]
    if missing:
        print(
            f"scan_gpu.py: backend(s) {', '.join(missing)} not available here (available: "
            f"{', '.join(available)})",
            file=sys.stderr,
        )
        sys.exit(2)
    return [name for name in BACKEND_ORDER if name in requested]


def run_cases(cases: list[Case], args: argparse.Namespace) -> bool:
    """Prints a row per case, then how the outputs agree; False when one failed."""
    failed = False
    base_ms = float("nan")
    for case in cases:
        try:
            row = measure(case, args)
        except Exception as error:  # one failing row must not hide the others
            traceback.print_exc()
            row, failed = Row(case.name, error=one_line(error)), True
        if case is cases[0] and case.name.endswith(" chunked"):
            base_ms = row.backward_graph_ms
        print(format_row(row, base_ms), flush=True)  # row by row: a time limit keeps them
        if row.capture_error:
            print(f"  {case.name}: CUDA-graph capture FAILED: {row.capture_error}", flush=True)
            failed = True
    if sum(case.inputs[0] is cases[0].inputs[0] for case in cases) > 1:
        try:
            print(agreement(cases), flush=True)
        except Exception as error:
            traceback.print_exc()
            print(f"agreement FAILED: {one_line(error)}", flush=True)
            failed = True
    return not failed


def run_stage(
    stage: int, shape: tuple[int, int, int], args: argparse.Namespace, device: torch.device
) -> bool:
    """Prints one stage's table (SS2D rows, then bare-scan rows); False when a row failed."""
    channels, height, width = shape
    print(f"\nstage {stage}: C {channels}, map {height} x {width} (L = {height * width})")
    print(f"{header()}\n{'-' * len(header())}", flush=True)
    passed = True
    for make_cases in (ss2d_cases, scan_cases):
        try:
            cases = make_cases(
                channels,
                height,
                width,
                batch=args.batch_size,
                dtype=DTYPES[args.dtype],
                backends=args.backends,
                device=device,
            )
        except Exception as error:  # one failing stage must not hide the others
            traceback.print_exc()
            print(f"{make_cases.__name__:<20} FAILED: {one_line(error)}", flush=True)
            passed = False
            continue
        passed &= run_cases(cases, args)
        del cases  # the last reference: its tensors go before the next kind's are made
        torch.cuda.empty_cache()
    return passed


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    require_cuda()
    try:
        import triton.testing  # noqa: F401  (do_bench times every figure)
    except ImportError as error:
        print(f"scan_gpu.py: needs triton for triton.testing.do_bench ({error})", file=sys.stderr)
        return 2
    device = torch.device("cuda", torch.cuda.current_device())
    maps = stage_maps(args.preset, args.frames, args.mel_bins)
    stages = args.stages if args.stages is not None else list(range(len(maps)))
    if any(not 0 <= stage < len(maps) for stage in stages):
        print(f"scan_gpu.py: --stages must be within 0..{len(maps) - 1}", file=sys.stderr)
        return 2
    args.backends = chosen_backends(args.backends)
    bandwidth, source = device_bandwidth()
    if args.bandwidth_tbs is not None:
        bandwidth, source = args.bandwidth_tbs * 1e12, "--bandwidth-tbs"
    args.bandwidth_bytes_per_second = bandwidth
    print(
        f"scan_gpu on {torch.cuda.get_device_name(device)}; torch {torch.__version__} (CUDA "
        f"{torch.version.cuda}); DASS-{args.preset}, batch {args.batch_size}, input "
        f"({args.batch_size}, {args.frames}, {args.mel_bins}), {args.dtype}; backends "
        f"{', '.join(args.backends)}; floor at {bandwidth / 1e12:.2f} TB/s ({source}); times: "
        "median ms of one call (do_bench, L2 flushed before each), graph = CUDA-graph replay",
        flush=True,
    )
    passed = [run_stage(stage, maps[stage], args, device) for stage in stages]
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
