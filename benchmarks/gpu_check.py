"""One-shot GPU check, side by side in one run: for every available scan backend, the eager and
the captured (CUDA-graph) DASS-small training step (train and eval samples/s, peak memory, kernels
and host launches per step, GPU-busy share), the same for the AST-base baseline (issue 20), then
the full method's epoch speed on synthetic data.

DASS-small and AST-base, batch 16, bf16 autocast, input (16, 798, 128), as in issues 11 and 20.
Warm-up and timed steps are bounded so the whole check stays within a few minutes on one
H100/H200. Run it through
`benchmarks/gpu_check.sh`, which runs the `gpu` tests first.

    python benchmarks/gpu_check.py [--steps 20] [--backends triton chunked]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from lungsrad.config import apply_overrides, load_config
from lungsrad.errors import first_line
from lungsrad.metrics import TRAIN_SAMPLES_PER_SECOND
from lungsrad.models import available_backends
from lungsrad.models.selective_scan import resolve_backend
from lungsrad.training.loop import predict, train_one_epoch
from lungsrad.training.train_step import TrainStep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import (  # noqa: E402  (a sibling script, not a package)
    bare_step_config,
    run_steps,
    synchronize,
    synthetic_parts,
    time_steps,
)

ROOT = Path(__file__).resolve().parents[1]
FULL_METHOD_CONFIG = ROOT / "configs" / "earlier_reading" / "table2_lung_srad.yaml"
FRAMES, MEL_BINS = 798, 128
# Host calls that start work on the GPU, as the profiler names them.
LAUNCH_PREFIXES = ("cudaLaunch", "cuLaunch", "cudaGraphLaunch", "cuGraphLaunch")


@dataclass
class Row:
    backend: str
    captured: bool
    model: str = "dass-small"
    train_per_second: float = float("nan")
    eval_per_second: float = float("nan")
    peak_gib: float = float("nan")
    kernels_per_step: float = float("nan")
    launches_per_step: float = float("nan")
    busy_share: float = float("nan")
    capture_seconds: float = float("nan")
    error: str = ""


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument(
        "--warmup",
        type=int,
        default=TrainStep.WARMUP_STEPS + 2,
        help="untimed steps per row (include the capture)",
    )
    parser.add_argument("--steps", type=int, default=20, help="most timed steps per row")
    parser.add_argument(
        "--seconds-per-row",
        type=float,
        default=15.0,
        help="bound on the timed steps of one row (3 steps at least)",
    )
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=1,
        help="steps under torch.profiler (kernel and launch counts)",
    )
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument(
        "--epoch-steps", type=int, default=24, help="most steps of the synthetic full-method epoch"
    )
    parser.add_argument(
        "--seconds-per-epoch",
        type=float,
        default=15.0,
        help="bound on the full-method epoch, estimated from the bare eager step",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="default: every available backend but 'reference' (a Python loop)",
    )
    parser.add_argument(
        "--no-ast", action="store_true", help="skip the AST-base rows (DASS-small only)"
    )
    parser.add_argument(
        "--method-backend",
        default="auto",
        help="scan backend of the full-method epoch (default: what auto picks)",
    )
    return parser.parse_args(argv)


def require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device visible to torch (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda}); run it on a GPU host with a CUDA build of torch",
            file=sys.stderr,
        )
        sys.exit(2)
    return torch.device("cuda", torch.cuda.current_device())


def _union_microseconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def profile_steps(step: TrainStep, *, count: int, first: int) -> tuple[float, float, float]:
    """(GPU kernels, host launch calls, microseconds the GPU was busy) per step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        run_steps(step, count=count, first=first)
        synchronize(step.device)
    events = profiler.events()
    device_events = [event for event in events if event.device_type == DeviceType.CUDA]
    launches = [event for event in events if event.name.startswith(LAUNCH_PREFIXES)]
    busy = _union_microseconds(
        [(event.time_range.start, event.time_range.end) for event in device_events]
    )
    return len(device_events) / count, len(launches) / count, busy / count


def eval_samples_per_second(step: TrainStep, *, batch_size: int, batches: int) -> float:
    """Samples/s of `predict` (the evaluation path) over `batches` batches of random input."""
    device = step.device
    count = batch_size * batches
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(count, FRAMES, MEL_BINS, generator=generator).half().to(device)
    indices = torch.arange(count, device=device)
    options = dict(batch_size=batch_size, amp_dtype=step.amp_dtype, model_frames=step.model_frames)
    predict(step.model, features, indices[:batch_size], **options)
    synchronize(device)
    started = time.perf_counter()
    predict(step.model, features, indices, **options)
    return count / (time.perf_counter() - started)


def measure_row(
    backend: str,
    captured: bool,
    args: argparse.Namespace,
    device: torch.device,
    *,
    model: str = "dass-small",
) -> Row:
    row = Row(backend, captured, model)
    config = bare_step_config(
        backend if model == "dass-small" else "auto",
        batch_size=args.batch_size,
        amp="bf16",
        capture=captured,
        device=device,
        model=model,
    )
    parts, data = synthetic_parts(config, device, num_cycles=args.batch_size)
    step = parts.train_step(data, capture=captured)
    seconds, timed = time_steps(
        step, warmup=args.warmup, steps=args.steps, budget_seconds=args.seconds_per_row
    )
    row.train_per_second = args.batch_size / seconds
    row.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
    row.capture_seconds = step.capture_seconds if captured else float("nan")
    kernels, launches, busy_us = profile_steps(
        step, count=args.profile_steps, first=args.warmup + timed + 1
    )
    row.kernels_per_step, row.launches_per_step = kernels, launches
    row.busy_share = min(busy_us / (seconds * 1e6), 1.0)
    row.eval_per_second = eval_samples_per_second(
        step, batch_size=args.eval_batch_size, batches=args.eval_batches
    )
    return row


def measure_rows(
    model: str, backend: str, args: argparse.Namespace, device: torch.device, rows: list[Row]
) -> bool:
    """The eager and the captured row of `model` (printed as they come, appended to `rows`);
    True when one failed. `backend` is DASS's scan backend, "-" for AST."""
    failed = False
    for captured in (False, True):
        try:
            row = measure_row(backend, captured, args, device, model=model)
        except Exception as error:  # one failing row must not hide the others
            traceback.print_exc()
            row = Row(backend, captured, model, error=_one_line(error))
            failed = True
        rows.append(row)
        print(format_row(row), flush=True)  # row by row: a time limit keeps what is done
        torch.cuda.empty_cache()
    return failed


def full_method_samples_per_second(
    backend: str, captured: bool, args: argparse.Namespace, device: torch.device, *, steps: int
) -> float:
    """Samples/s of a second synthetic epoch of the Table 2 Lung-SRAD config (SpecAugment,
    smoothing, dual patch-mix, drop path); the first epoch warms up (and captures)."""
    config = apply_overrides(
        load_config(FULL_METHOD_CONFIG),
        {
            "model.scan_backend": backend,
            "train.batch_size": args.batch_size,
            "train.amp": "bf16",
            "train.device": "cuda",
            "train.capture_step": captured,
        },
    )
    parts, data = synthetic_parts(config, device, num_cycles=args.batch_size * steps)
    step = parts.train_step(data, capture=captured)
    metrics = {}
    for epoch in (1, 2):
        metrics = train_one_epoch(
            step_function=step,
            data=data,
            train=config.train,
            seed=0,
            epoch=epoch,
            show_progress=False,
        )
    return metrics[TRAIN_SAMPLES_PER_SECOND]


def _cell(value: float, pattern: str) -> str:
    if value != value:  # NaN: not measured
        width = pattern.split(".")[0]
        return "-".rjust(int(width) if width.isdigit() else 1)
    return format(value, pattern)


TABLE_HEADER = (
    f"{'model':<10} {'backend':<10} {'step':<9} {'train/s':>8} {'eval/s':>8} {'peak GiB':>8} "
    f"{'kernels/step':>12} {'launches/step':>13} {'GPU busy':>8} {'capture s':>9}"
)


def format_row(row: Row) -> str:
    name = "captured" if row.captured else "eager"
    if row.error:
        return f"{row.model:<10} {row.backend:<10} {name:<9} FAILED: {row.error}"
    busy = "-" if row.busy_share != row.busy_share else f"{100 * row.busy_share:.0f}%"
    return (
        f"{row.model:<10} {row.backend:<10} {name:<9} {_cell(row.train_per_second, '8.1f')} "
        f"{_cell(row.eval_per_second, '8.0f')} {_cell(row.peak_gib, '8.2f')} "
        f"{_cell(row.kernels_per_step, '12.0f')} {_cell(row.launches_per_step, '13.0f')} "
        f"{busy:>8} {_cell(row.capture_seconds, '9.1f')}"
    )


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error, empty='')}"


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    device = require_cuda()
    started = time.perf_counter()
    backends = args.backends or [name for name in available_backends() if name != "reference"]
    print(
        f"gpu_check on {torch.cuda.get_device_name(device)}; torch {torch.__version__} (CUDA "
        f"{torch.version.cuda}); backends available: {', '.join(available_backends())}; "
        f"DASS-small{'' if args.no_ast else ' and AST-base'}, batch {args.batch_size}, "
        f"input ({args.batch_size}, {FRAMES}, {MEL_BINS}), "
        f"bf16 autocast, Adam; eval batch {args.eval_batch_size}",
        flush=True,
    )
    failed = False
    rows = []
    print(f"\n{TABLE_HEADER}\n{'-' * len(TABLE_HEADER)}", flush=True)
    for backend in backends:
        failed |= measure_rows("dass-small", backend, args, device, rows)

    method_backend = resolve_backend(args.method_backend, device)
    bare = {
        (row.backend, row.captured): row.train_per_second
        for row in rows
        if row.model == "dass-small"
    }
    # About --seconds-per-epoch per epoch at half the bare step's speed (three forwards), and
    # enough full batches to warm up and capture.
    bare_eager = bare.get((method_backend, False), float("nan"))
    steps = args.epoch_steps
    if bare_eager == bare_eager:
        budget_steps = int(args.seconds_per_epoch * bare_eager / 2 / args.batch_size)
        steps = max(TrainStep.WARMUP_STEPS + 3, min(steps, budget_steps))
    print(
        f"\nfull method ({FULL_METHOD_CONFIG.relative_to(ROOT)}: SpecAugment, smoothing, dual "
        f"patch-mix, drop path), synthetic epochs of {steps} steps (the second timed), backend "
        f"{method_backend}:"
    )
    for captured in (False, True):
        name = "captured" if captured else "eager"
        try:
            speed = full_method_samples_per_second(
                method_backend, captured, args, device, steps=steps
            )
        except Exception as error:
            traceback.print_exc()
            print(f"  {name:<9} FAILED: {_one_line(error)}")
            failed = True
            continue
        reference = bare.get((method_backend, captured), float("nan"))
        print(
            f"  {name:<9} {speed:8.1f} samples/s ({_cell(100 * speed / reference, '.0f')}% of "
            f"the bare {name} step's {_cell(reference, '.1f')})",
            flush=True,
        )
        torch.cuda.empty_cache()
    if not args.no_ast:
        # Last, so that a time limit on the whole check cuts the baseline, not the DASS figures.
        print(f"\nAST-base baseline (issue 20), same step and input:\n{TABLE_HEADER}", flush=True)
        failed |= measure_rows("ast-base", "-", args, device, rows)
    print(f"\ngpu_check benchmarks took {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
