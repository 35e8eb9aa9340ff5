"""Training throughput of DASS-small (samples/s of a full optimiser step), per scan backend.

Input (batch, 798, 128) fbanks (8 s cycles), 4 classes, AdamW, on CUDA when present (bf16
autocast by default) else CPU. A CPU step at batch 16 takes tens of seconds; use --batch-size
and --steps to shorten it.

    python benchmarks/train_throughput.py                         # GPU host
    python benchmarks/train_throughput.py --batch-size 2 --steps 2  # CPU
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from lungsrad.models import DASS, available_backends


def peak_memory_text(device: torch.device) -> str:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        reserved = torch.cuda.max_memory_reserved(device) / 2**30
        return f"peak GPU memory {peak:.2f} GiB allocated, {reserved:.2f} GiB reserved"
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # process-wide high-water mark
    return f"peak process RSS so far {peak_kib / 2**20:.2f} GiB"


def measure(backend: str, args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    model = DASS.small(num_classes=4, scan_backend=backend).to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=1e-6)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    use_amp = amp_dtype is not None and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    x = torch.randn(args.batch_size, args.frames, args.mel_bins, device=device)
    labels = torch.randint(0, 4, (args.batch_size,), device=device)

    def step() -> float:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), labels)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        return loss.item()  # synchronises

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    best, mean = min(times), sum(times) / len(times)
    print(
        f"{backend:<10} batch {args.batch_size:>3}: {args.batch_size / mean:8.2f} samples/s "
        f"(mean step {mean:.3f} s, best {best:.3f} s, {args.steps} steps after {args.warmup} "
        f"warm-up); {peak_memory_text(device)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CUDA 20, CPU 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (CUDA 3, CPU 1)")
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
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    args.steps = args.steps if args.steps is not None else (20 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    backends = args.backends or [b for b in available_backends() if b != "reference"]
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    amp = args.amp if cuda else "off (CPU)"
    print(
        f"DASS-small training step on {name}; torch {torch.__version__}; input "
        f"({args.batch_size}, {args.frames}, {args.mel_bins}); autocast {amp}"
    )
    for backend in backends:
        if backend not in available_backends():
            print(
                f"{backend:<10} not available here (available: {', '.join(available_backends())})"
            )
            continue
        measure(backend, args, device)
        if cuda:
            torch.cuda.empty_cache()
    return None


if __name__ == "__main__":
    sys.exit(main())
