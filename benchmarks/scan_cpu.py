"""CPU selective-scan benchmark on DASS-small stage-0 shapes (4 x 96 channels, L = 6400).

Measures side by side in one run, float32, forward and forward+backward:
- `chunked`: the chunked backend (the CPU default);
- `loop`: the baseline of the targets (>= 3x forward, >= 20x forward+backward): the plain
  sequential loop vectorised over channels, one `x[..., t]` read per step, autograd backward
  (its backward is quadratic in L: each read's gradient is a zero-filled full-size tensor);
- `reference`: the `reference` backend, the same loop written with `unbind` (linear backward);
- `cumsum-chunk32`: a plain within-chunk log-space cumsum scan with autograd backward.

    python benchmarks/scan_cpu.py                                # batch 1 and 4 (minutes)
    python benchmarks/scan_cpu.py --loop-backward-batch-sizes 1  # skip the slowest part
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lungsrad.models.selective_scan import selective_scan_chunked, selective_scan_reference

CHANNELS, DIRECTIONS, LENGTH = 96, 4, 6400


def make_inputs(batch: int, *, seed: int = 0) -> list[torch.Tensor]:
    """Stage-0 scan inputs with the golden file's wide ranges (long and short memories)."""
    generator = torch.Generator().manual_seed(seed)
    channels = CHANNELS * DIRECTIONS

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) * (high - low) + low

    dt = torch.exp(uniform(math.log(1e-3), math.log(0.5), channels))
    return [
        torch.randn(batch, channels, LENGTH, generator=generator),  # u
        0.5 * torch.randn(batch, channels, LENGTH, generator=generator),  # delta
        -torch.exp(uniform(math.log(0.25), math.log(4.0), channels, 1)),  # A
        torch.randn(batch, DIRECTIONS, 1, LENGTH, generator=generator),  # B
        torch.randn(batch, DIRECTIONS, 1, LENGTH, generator=generator),  # C
        uniform(0.5, 1.5, channels),  # D
        dt + torch.log(-torch.expm1(-dt)),  # delta_bias: softplus(bias) in [1e-3, 0.5]
    ]


def plain_loop(u, delta, A, B, C, D, delta_bias) -> torch.Tensor:
    """The plain sequential loop over positions, vectorised over batch and channels (N = 1)."""
    channels = u.shape[1]
    delta = F.softplus(delta + delta_bias[:, None])
    decay = torch.exp(delta * A)  # (b, d, L) since N = 1
    drive = delta * u * B[:, :, 0].repeat_interleave(channels // B.shape[1], 1)
    gate = C[:, :, 0].repeat_interleave(channels // C.shape[1], 1)
    state = torch.zeros_like(u[..., 0])
    outputs = []
    for t in range(u.shape[-1]):
        state = decay[..., t] * state + drive[..., t]
        outputs.append(state * gate[..., t])
    return torch.stack(outputs, -1) + D[:, None] * u


def cumsum_chunked(u, delta, A, B, C, D, delta_bias, chunk: int = 32) -> torch.Tensor:
    """Plain within-chunk log-space cumsum scan (autograd backward), for scale only.

    h_t = exp(S_t) * cumsum_s(exp(-S_s) x_s) inside each chunk, S the within-chunk cumulative
    sum of delta * A, then a loop carrying the states across chunks. exp(-S_s) overflows once a
    chunk's total decay passes ~88 nats in float32, so this is not safe for strong decays.
    """
    batch, channels, length = u.shape
    delta = F.softplus(delta + delta_bias[:, None])
    groups = B.shape[1]
    gate_b = B[:, :, 0].repeat_interleave(channels // groups, 1)
    gate_c = C[:, :, 0].repeat_interleave(channels // groups, 1)
    chunks = length // chunk
    cumulative = (delta * A).view(batch, channels, chunks, chunk).cumsum(-1)
    drive = (delta * gate_b * u).view(batch, channels, chunks, chunk)
    local = cumulative.exp() * (torch.exp(-cumulative) * drive).cumsum(-1)
    through = cumulative[..., -1].exp()
    start = torch.zeros_like(local[..., 0, 0])
    starts = []
    for c in range(chunks):
        starts.append(start)
        start = through[..., c] * start + local[..., c, -1]
    states = local + torch.stack(starts, -1)[..., None] * cumulative.exp()
    y = states.reshape(batch, channels, length) * gate_c
    return y + D[:, None] * u


def time_call(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best, median) seconds over `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def run(batch: int, args: argparse.Namespace) -> None:
    inputs = make_inputs(batch)
    grad_out = torch.randn(
        batch, CHANNELS * DIRECTIONS, LENGTH, generator=torch.Generator().manual_seed(1)
    )
    methods = {
        "chunked": lambda *a: selective_scan_chunked(*a),
        "loop": plain_loop,
        "reference": lambda *a: selective_scan_reference(*a),
        "cumsum-chunk32": cumsum_chunked,
    }
    slow = {"loop", "reference"}

    def forward(fn):
        def call():
            with torch.no_grad():
                return fn(*inputs)

        return call

    def forward_backward(fn):
        def call():
            leaves = [t.detach().requires_grad_() for t in inputs]
            y = fn(*leaves)
            grads = torch.autograd.grad(y, leaves, grad_out)
            return y.detach(), grads

        return call

    print(
        f"\nbatch {batch}: u/delta ({batch}, {CHANNELS * DIRECTIONS}, {LENGTH}), "
        f"B/C ({batch}, {DIRECTIONS}, 1, {LENGTH}), float32, {torch.get_num_threads()} threads",
        flush=True,
    )
    # Truth: the reference loop in float64.
    leaves = [t.double().requires_grad_() for t in inputs]
    truth = selective_scan_reference(*leaves)
    truth_grads = torch.autograd.grad(truth, leaves, grad_out.double())
    truth = truth.detach()
    results = {}
    for name, fn in methods.items():
        fwd = time_call(forward(fn), args.loop_repeats if name in slow else args.repeats)
        run_backward = name != "loop" or batch in args.loop_backward_batch_sizes
        repeats = 1 if name in slow else args.repeats
        fwd_bwd = time_call(forward_backward(fn), repeats) if run_backward else (math.nan,) * 2
        y, grads = forward_backward(fn)() if name not in slow else (forward(fn)(), None)
        error_y = ((y.double() - truth).abs().max() / truth.abs().max()).item()
        error_g = math.nan
        if grads is not None:
            error_g = max(
                ((g.double() - r).abs().max() / r.abs().max()).item()
                for g, r in zip(grads, truth_grads, strict=True)
            )
        results[name] = (fwd, fwd_bwd, error_y, error_g)
    print(
        f"{'method':<16}{'fwd best':>10}{'fwd med':>10}{'x loop':>8}{'fwd+bwd best':>14}"
        f"{'fwd+bwd med':>13}{'x loop':>9}{'rel err y':>11}{'rel err grads':>15}"
    )
    loop_fwd, loop_fwd_bwd = results["loop"][0][0], results["loop"][1][0]
    for name, (fwd, fwd_bwd, error_y, error_g) in results.items():
        print(
            f"{name:<16}{fwd[0] * 1e3:>8.1f}ms{fwd[1] * 1e3:>8.1f}ms{loop_fwd / fwd[0]:>7.1f}x"
            f"{fwd_bwd[0] * 1e3:>12.1f}ms{fwd_bwd[1] * 1e3:>11.1f}ms"
            f"{loop_fwd_bwd / fwd_bwd[0]:>8.1f}x{error_y:>11.1e}{error_g:>15.1e}",
            flush=True,
        )
    ref_fwd, ref_fwd_bwd = results["reference"][0][0], results["reference"][1][0]
    chunked_fwd, chunked_fwd_bwd = results["chunked"][0][0], results["chunked"][1][0]
    print(
        f"chunked vs reference backend: forward {ref_fwd / chunked_fwd:.1f}x, "
        f"forward+backward {ref_fwd_bwd / chunked_fwd_bwd:.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of the fast methods")
    parser.add_argument(
        "--loop-repeats", type=int, default=3, help="timed forward calls of the two loops"
    )
    parser.add_argument(
        "--loop-backward-batch-sizes",
        type=int,
        nargs="*",
        default=[1, 4],
        help="batch sizes at which the plain loop's forward+backward is timed (once; it takes "
        "about 13 s at batch 1 on 2 idle cores, and scales with the batch)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}; times: best and median of repeated calls (the loops' "
        "forward+backward: one call); 'x loop' = the loop's best time / the method's; errors: "
        "max |diff| / max |float64 result| (gradients: the worst of u, delta, A, B, C, D, "
        "delta_bias; not measured for the loops)"
    )
    for batch in args.batch_sizes:
        run(batch, args)


if __name__ == "__main__":
    main()
