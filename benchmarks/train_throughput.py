"""Training throughput of DASS-small (per scan backend) and AST-base side by side (samples/s of a
full optimiser step), with the eager and (on CUDA) the captured CUDA-graph step.

The step is the one `lungsrad train` runs (`lungsrad.training.train_step.TrainStep`: plain
cross-entropy, Adam) on synthetic (batch, 798, 128) fbanks (8 s cycles), 4 classes, bf16
autocast on CUDA by default, float32 on CPU. AST-base (86 M parameters, 950 tokens, attention
through scaled_dot_product_attention) has no scan backend. A CPU step at batch 16 takes tens of
seconds; use --batch-size and --steps to shorten it. `benchmarks/gpu_check.py` builds on these
helpers.

    python benchmarks/train_throughput.py                         # GPU host
    python benchmarks/train_throughput.py --batch-size 2 --steps 2  # CPU
    python benchmarks/train_throughput.py --models ast-base       # AST-base only
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from lungsrad.config import ExperimentConfig, apply_overrides, config_from_dict
from lungsrad.models import available_backends
from lungsrad.training.loop import EpochTotals, draw_epoch_randomness
from lungsrad.training.setup import TrainingParts, build_training_parts
from lungsrad.training.train_step import EpochData, TrainStep


def peak_memory_text(device: torch.device) -> str:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        reserved = torch.cuda.max_memory_reserved(device) / 2**30
        return f"peak GPU memory {peak:.2f} GiB allocated, {reserved:.2f} GiB reserved"
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # process-wide high-water mark
    return f"peak process RSS so far {peak_kib / 2**20:.2f} GiB"


# The benchmarked models: the paper's DASS-small and the AST baseline at its real size.
MODELS = {
    "dass-small": {"backbone": "dass", "preset": "small"},
    "ast-base": {"backbone": "ast", "ast_size": "base"},
}


def segment_seconds_for(frames: int, *, sample_rate_hz: int = 16000) -> float:
    """The data.segment_seconds whose 25 ms / 10 ms fbank has `frames` frames (798: 8 s)."""
    window, shift = sample_rate_hz * 25 // 1000, sample_rate_hz * 10 // 1000
    return ((frames - 1) * shift + window) / sample_rate_hz


def bare_step_config(
    backend: str,
    *,
    batch_size: int,
    amp: str,
    capture: bool,
    device: torch.device,
    model: str = "dass-small",
    frames: int = 798,
    mel_bins: int = 128,
) -> ExperimentConfig:
    """`model` (MODELS) with plain cross-entropy (no SpecAugment, patch-mix or smoothing) on
    (frames, mel_bins) inputs; `backend` is DASS's scan backend (AST has none)."""
    return config_from_dict(
        {
            "data": {
                "segment_seconds": segment_seconds_for(frames),
                "num_mel_bins": mel_bins,
            },
            "model": {**MODELS[model], "scan_backend": backend, "checkpoint": None},
            "train": {
                "batch_size": batch_size,
                "amp": amp if device.type == "cuda" else "off",
                "use_specaugment": False,
                "capture_step": capture,
                "device": device.type,
            },
        }
    )


def synthetic_parts(
    config: ExperimentConfig,
    device: torch.device,
    *,
    num_cycles: int,
    frames: int = 798,
    mel_bins: int = 128,
) -> tuple[TrainingParts, EpochData]:
    """The run's training parts and `num_cycles` random float16 fbanks with random labels."""
    config = apply_overrides(config, {"model.checkpoint": None})
    parts = build_training_parts(config, device)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(num_cycles, frames, mel_bins, generator=generator).half()
    labels = torch.randint(0, config.model.num_classes, (num_cycles,), generator=generator)
    data = EpochData(
        features=features.to(device),
        labels=labels.to(device),
        train_indices=torch.arange(num_cycles, device=device),
    )
    return parts, data


def run_steps(step: TrainStep, *, count: int, first: int = 0) -> None:
    """`count` training steps on the first batch of the data (random numbers of steps
    first..first+count-1 of epoch 1), checked for NaN/inf once at the end."""
    batch = step.train.batch_size
    randomness = draw_epoch_randomness(
        seed=0,
        epoch=1,
        num_steps=first + count,
        batch_size=batch,
        specaugment=step.specaugment,
        mixes=step.objective.mixes,
        alpha=step.objective.config.alpha,
        cells=step.cells,
        device=step.device,
    )
    indices = step.data.train_indices[:batch]
    totals = EpochTotals(step.device)
    for index in range(first, first + count):
        totals.add(step(indices, randomness[index], epoch=1, step=index + 1), batch)
    totals.raise_if_not_finite(epoch=1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: TrainStep, *, warmup: int, steps: int, budget_seconds: float | None = None
) -> tuple[float, int]:
    """(mean seconds per step, steps timed) after `warmup` untimed steps (on CUDA with capture,
    warm-up includes TrainStep.WARMUP_STEPS eager steps and the capture). With
    `budget_seconds`, one more untimed step estimates the step time and at most that many
    seconds of steps (3 at least) are timed. Resets the CUDA peak-memory statistics first."""
    run_steps(step, count=warmup)
    synchronize(step.device)
    if step.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(step.device)
    first = warmup
    if budget_seconds is not None:
        started = time.perf_counter()
        run_steps(step, count=1, first=first)
        synchronize(step.device)
        estimate = max(time.perf_counter() - started, 1e-6)
        steps = max(3, min(steps, int(budget_seconds / estimate)))
        first += 1
    started = time.perf_counter()
    run_steps(step, count=steps, first=first)
    synchronize(step.device)
    return (time.perf_counter() - started) / steps, steps


def measure(
    backend: str,
    capture: bool,
    args: argparse.Namespace,
    device: torch.device,
    *,
    model: str = "dass-small",
) -> None:
    config = bare_step_config(
        backend,
        batch_size=args.batch_size,
        amp=args.amp,
        capture=capture,
        device=device,
        model=model,
        frames=args.frames,
        mel_bins=args.mel_bins,
    )
    parts, data = synthetic_parts(
        config, device, num_cycles=args.batch_size, frames=args.frames, mel_bins=args.mel_bins
    )
    step = parts.train_step(data, capture=capture)
    seconds, _ = time_steps(step, warmup=args.warmup, steps=args.steps)
    name = model if model != "dass-small" else f"{model} {backend}"
    label = f"{name} {'captured' if capture else 'eager'}"
    print(
        f"{label:<30} batch {args.batch_size:>3}: {args.batch_size / seconds:8.2f} samples/s "
        f"(mean step {seconds:.3f} s over {args.steps} steps after {args.warmup} warm-up"
        f"{f', capture {step.capture_seconds:.1f} s' if capture else ''}); "
        f"{peak_memory_text(device)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CUDA 20, CPU 3)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"untimed steps (CUDA {TrainStep.WARMUP_STEPS + 2}, CPU 1)",
    )
    parser.add_argument("--frames", type=int, default=798)
    parser.add_argument("--mel-bins", type=int, default=128)
    parser.add_argument(
        "--amp",
        choices=["bf16", "fp16", "off"],
        default="bf16",
        help="autocast dtype on CUDA (CPU always runs float32)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="default: every available backend except 'reference' (a Python "
        "loop over 6400 positions; add it explicitly to time it)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(MODELS),
        default=list(MODELS),
        help="models to time, side by side (default: all)",
    )
    parser.add_argument("--no-capture", action="store_true", help="CUDA: time the eager step only")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    args.steps = args.steps if args.steps is not None else (20 if cuda else 3)
    args.warmup = (
        args.warmup if args.warmup is not None else (TrainStep.WARMUP_STEPS + 2 if cuda else 1)
    )
    backends = args.backends or [b for b in available_backends() if b != "reference"]
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    amp = args.amp if cuda else "off (CPU)"
    print(
        f"training step of {', '.join(args.models)} on {name}; torch {torch.__version__}; input "
        f"({args.batch_size}, {args.frames}, {args.mel_bins}); autocast {amp}"
    )
    captures = [False] if not cuda or args.no_capture or args.amp == "fp16" else [False, True]
    for model in args.models:
        for backend in backends if MODELS[model]["backbone"] == "dass" else ["auto"]:
            if backend not in available_backends() and backend != "auto":
                print(
                    f"{backend:<10} not available here (available: "
                    f"{', '.join(available_backends())})"
                )
                continue
            for capture in captures:
                measure(backend, capture, args, device, model=model)
                if cuda:
                    torch.cuda.empty_cache()
    return None


if __name__ == "__main__":
    sys.exit(main())
