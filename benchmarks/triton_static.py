"""Static cost of the `triton` scan's launches in a DASS training step, compiled for sm_90.

No GPU needed: the DASS model runs on the meta device to find every SS2D's input, the op's own
launch plan (`selective_scan.triton.forward_launches` / `backward_launches`, what a GPU run
launches, with the same tensors' dtypes and strides and Triton's own argument specialisation) is
compiled with Triton for an sm_90 target, and ptxas / cuobjdump (shipped with Triton) report
each kernel.

    python benchmarks/triton_static.py            # DASS-small and -medium, batch 16 and 64
    python benchmarks/triton_static.py --json     # one JSON object: {"launches": [...], ...}
    python benchmarks/triton_static.py --check    # exit 1 on a spill or < 4 programs per SM
                                                  # (DASS-small, batch 16)

Per launch: grid, programs per SM (132 SMs, H100/H200 SXM), warps, registers, spill bytes,
shared memory, SASS instructions (static: the chunk kernels have no loops; the carry kernel's
body runs once per block of chunks), warp-instructions per element, bytes moved and two floors:
the bytes at 4.8 TB/s and the warp-instructions at 4 issued per clock per SM at 1.98 GHz.
Floors, not predictions: a GPU run (benchmarks/scan_gpu.py) gives the times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROCESSORS = 132  # SMs of an H100 SXM / H200
BANDWIDTH_BYTES_PER_S = 4.8e12  # H200 HBM3e
ISSUE_PER_CLOCK_PER_SM = 4  # warp schedulers
CLOCK_HZ = 1.98e9
TARGET_CAPABILITY = 90
MIN_PROGRAMS_PER_SM = 4


def segment_shape() -> tuple[int, int]:
    """(frames, mel_bins) of an ICBHI segment under the default data config (798 x 128)."""
    from lungsrad.config import DataConfig, expected_num_frames

    return expected_num_frames(DataConfig()), DataConfig().num_mel_bins


@dataclass(frozen=True)
class LaunchCost:
    model: str
    batch: int
    stage: int
    blocks: int  # SS2D blocks of the stage: how often a training step runs this launch
    height: int
    width: int
    channels: int
    name: str  # e.g. "forward totals"
    kernel: str
    grid: tuple[int, int, int]
    programs: int
    programs_per_sm: float
    warps: int
    registers: int
    spill_bytes: int
    shared_bytes: int
    sass_instructions: int
    warp_instructions_per_element: float
    bytes_moved: int
    bytes_floor_us: float
    issue_floor_us: float

    @property
    def pass_(self) -> str:
        return self.name.split()[0]

    def as_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["pass"] = self.pass_
        record["grid"] = list(self.grid)
        return record


def fail(message: str) -> None:
    print(f"triton_static: {message}", file=sys.stderr)
    raise SystemExit(2)


def tools() -> tuple[Path, Path]:
    """(ptxas, cuobjdump) shipped with Triton's NVIDIA backend."""
    import triton

    folder = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    ptxas, cuobjdump = folder / "ptxas", folder / "cuobjdump"
    for tool in (ptxas, cuobjdump):
        if not tool.is_file():
            fail(f"{tool} not found: this Triton build has no NVIDIA tools")
    return ptxas, cuobjdump


def ss2d_inputs(preset: str, batch: int, dtype: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """(stage, `ss2d_scan_triton` keyword arguments) of every SS2D call of a DASS forward on an
    ICBHI segment (`segment_shape`), on the meta device, with the dtypes of a bf16-autocast step."""
    import torch
    import torch.nn.functional as F

    from lungsrad.models import DASS
    from lungsrad.models.dass import SS2D

    with torch.device("meta"):
        model = getattr(DASS, preset)(num_classes=4, scan_backend="chunked")
    model = model.to(dtype)
    calls: list[tuple[int, dict[str, Any]]] = []

    def record(stage: int):
        def hook(module: SS2D, args: tuple) -> None:
            u = F.silu(module.conv2d(module.in_proj(args[0])))
            calls.append((stage, module.fused_scan_inputs(u)))

        return hook

    for stage, layer in enumerate(model.layers):
        for module in layer.modules():
            if isinstance(module, SS2D):
                module.register_forward_pre_hook(record(stage))
    with torch.no_grad():
        model(torch.empty(batch, *segment_shape(), device="meta", dtype=dtype))
    yield from calls


def step_launches(preset: str, batch: int, dtype: Any) -> Iterator[tuple[int, int, Any, Any]]:
    """(stage, blocks, op arguments, KernelLaunch) of every distinct launch of a training step
    (forward and backward), with the number of SS2D blocks that run it."""
    import torch

    from lungsrad.models.selective_scan import triton as triton_scan

    per_stage: dict[int, list[dict[str, Any]]] = {}
    for stage, inputs in ss2d_inputs(preset, batch, dtype):
        per_stage.setdefault(stage, []).append(inputs)
    for stage, calls in per_stage.items():
        inputs = calls[0]
        u = inputs["u"]
        launch = triton_scan.plan_launch(
            u.shape[0], u.shape[2], u.shape[1], directions=4, fused=True, processors=PROCESSORS
        )
        args = triton_scan.ss2d_scan_arguments(**inputs, launch=launch)
        forward, y, entering = triton_scan.forward_launches(
            *args[:11], triton_scan.LaunchConfig(*args[11])
        )
        grad_y = torch.empty_like(y)
        backward, _ = triton_scan.backward_launches(
            grad_y, *args[:7], entering, *args[7:11], triton_scan.LaunchConfig(*args[11])
        )
        for kernel_launch in (*forward, *backward):
            yield stage, len(calls), inputs, kernel_launch


def compile_launch(kernel_launch: Any) -> Any:
    """Triton's compile of the launch for sm_90, specialised on its arguments as `run` does."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.compiler import compile as triton_compile
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", TARGET_CAPABILITY, 32)
    backend = make_backend(target)
    kernel = kernel_launch.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = {"debug": False, **kernel_launch.options}
    bound, specialization, options = binder(*kernel_launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(
        backend, kwargs, bound, specialization, options
    )
    source = ASTSource(kernel, signature, constexprs, attrs)
    return triton_compile(source, target=target, options=options.__dict__)


def inspect_binary(compiled: Any, ptxas: Path, cuobjdump: Path) -> dict[str, int]:
    """Registers, spill bytes, shared memory and SASS instruction count of a compiled kernel."""
    with tempfile.TemporaryDirectory() as folder:
        ptx = Path(folder) / "kernel.ptx"
        cubin = Path(folder) / "kernel.cubin"
        ptx.write_text(compiled.asm["ptx"])
        architecture = re.search(r"^\.target (\S+)", compiled.asm["ptx"], re.MULTILINE)
        report = subprocess.run(
            [str(ptxas), "-v", f"--gpu-name={architecture.group(1)}", str(ptx), "-o", str(cubin)],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        cubin.write_bytes(compiled.asm["cubin"])
        sass = subprocess.run(
            [str(cuobjdump), "-sass", str(cubin)], capture_output=True, text=True, check=True
        ).stdout
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    instructions = sum(1 for line in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4,}\*/", line))
    return {
        "registers": registers,
        "spill_bytes": int(spills.group(1)) + int(spills.group(2)),
        "shared_bytes": int(compiled.metadata.shared),
        "sass_instructions": instructions,
    }


def bytes_moved(kernel_launch: Any) -> int:
    """Bytes of every tensor argument read or written once (an atomically added output twice):
    the launch's memory traffic if nothing were read twice."""
    import torch

    total = 0
    seen: set[int] = set()
    for argument in kernel_launch.args:
        if isinstance(argument, torch.Tensor) and id(argument) not in seen:
            seen.add(id(argument))
            total += argument.numel() * argument.element_size()
    if kernel_launch.options.get("FUSED") and "output" in kernel_launch.name:
        total += kernel_launch.args[8].numel() * kernel_launch.args[8].element_size()
    if kernel_launch.options.get("FUSED") and "gradients" in kernel_launch.name:
        total += kernel_launch.args[10].numel() * kernel_launch.args[10].element_size()
    return total


def elements_per_program(kernel_launch: Any) -> int:
    options = kernel_launch.options
    if "BLOCK_N" in options:  # the carry: every chunk of a channel block
        return options["NUM_CHUNKS"] * options["BLOCK_C"]
    lanes_per_program = 2 if options["FUSED"] else 1
    return options["BLOCK_T"] * options["BLOCK_C"] * lanes_per_program


def dynamic_instructions(kernel_launch: Any, static: int) -> int:
    options = kernel_launch.options
    if "BLOCK_N" in options:
        return static * -(-options["NUM_CHUNKS"] // options["BLOCK_N"])
    return static


def measure(presets: list[str], batches: list[int], dtype_name: str) -> list[LaunchCost]:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    ptxas, cuobjdump = tools()
    costs: list[LaunchCost] = []
    compiled_cache: dict[tuple, dict[str, int]] = {}
    for preset in presets:
        for batch in batches:
            for stage, blocks, inputs, kernel_launch in step_launches(preset, batch, dtype):
                key = specialisation_key(kernel_launch)
                if key not in compiled_cache:
                    compiled = compile_launch(kernel_launch)
                    compiled_cache[key] = inspect_binary(compiled, ptxas, cuobjdump)
                binary = compiled_cache[key]
                grid = tuple(kernel_launch.grid)
                programs = grid[0] * grid[1] * grid[2]
                warps = kernel_launch.options["num_warps"]
                dynamic = dynamic_instructions(kernel_launch, binary["sass_instructions"])
                moved = bytes_moved(kernel_launch)
                issue_seconds = (
                    dynamic * warps * programs
                ) / (PROCESSORS * ISSUE_PER_CLOCK_PER_SM * CLOCK_HZ)  # fmt: skip
                costs.append(
                    LaunchCost(
                        model=preset,
                        batch=batch,
                        stage=stage,
                        blocks=blocks,
                        height=inputs["height"],
                        width=inputs["width"],
                        channels=inputs["u"].shape[2],
                        name=kernel_launch.name,
                        kernel=kernel_launch.kernel.__name__,
                        grid=grid,  # type: ignore[arg-type]
                        programs=programs,
                        programs_per_sm=round(programs / PROCESSORS, 2),
                        warps=warps,
                        registers=binary["registers"],
                        spill_bytes=binary["spill_bytes"],
                        shared_bytes=binary["shared_bytes"],
                        sass_instructions=binary["sass_instructions"],
                        warp_instructions_per_element=round(
                            dynamic * warps / elements_per_program(kernel_launch), 3
                        ),
                        bytes_moved=moved,
                        bytes_floor_us=round(moved / BANDWIDTH_BYTES_PER_S * 1e6, 2),
                        issue_floor_us=round(issue_seconds * 1e6, 2),
                    )
                )
    return costs


def specialisation_key(kernel_launch: Any) -> tuple:
    """What Triton compiles one binary for: the kernel, its constexprs and the arguments'
    dtypes, 16-divisibility and equality to 1."""
    import torch

    options = tuple(sorted(map(str, kernel_launch.options.items())))
    parts: list[Any] = [kernel_launch.kernel.__name__, options]
    for argument in kernel_launch.args:
        if isinstance(argument, torch.Tensor):
            parts.append(str(argument.dtype))
        elif isinstance(argument, int):
            parts.append((argument == 1, argument % 16 == 0, argument >= 2**31))
        else:
            parts.append(repr(argument))
    return tuple(parts)


def step_totals(costs: list[LaunchCost]) -> list[dict[str, Any]]:
    """Per (model, batch): the four stages' launches summed over the blocks of a step."""
    totals: dict[tuple[str, int], dict[str, Any]] = {}
    for cost in costs:
        entry = totals.setdefault(
            (cost.model, cost.batch),
            {"model": cost.model, "batch": cost.batch, "launches": 0, "bytes_floor_ms": 0.0,
             "issue_floor_ms": 0.0},
        )  # fmt: skip
        entry["launches"] += cost.blocks
        entry["bytes_floor_ms"] += cost.blocks * cost.bytes_floor_us / 1000
        entry["issue_floor_ms"] += cost.blocks * cost.issue_floor_us / 1000
    for entry in totals.values():
        entry["bytes_floor_ms"] = round(entry["bytes_floor_ms"], 3)
        entry["issue_floor_ms"] = round(entry["issue_floor_ms"], 3)
    return list(totals.values())


def check(costs: list[LaunchCost]) -> list[str]:
    """Targets: no spill anywhere; >= 4 programs per SM in every DASS-small batch-16 chunk
    launch (the carry launches are a few hundred light programs by design)."""
    problems = [
        f"{c.model} batch {c.batch} stage {c.stage} {c.name}: {c.spill_bytes} spill bytes"
        for c in costs
        if c.spill_bytes
    ]
    problems += [
        f"{c.model} batch {c.batch} stage {c.stage} {c.name}: {c.programs_per_sm} programs/SM"
        for c in costs
        if c.model == "small"
        and c.batch == 16
        and c.programs_per_sm < MIN_PROGRAMS_PER_SM
    ]
    return problems


def print_table(costs: list[LaunchCost]) -> None:
    header = (
        f"{'model':6} {'batch':>5} {'stage':>5} {'map':>12} {'launch':20} {'grid':>16} "
        f"{'prog/SM':>8} {'warps':>5} {'regs':>4} {'spill':>5} {'smem':>6} {'SASS':>5} "
        f"{'wi/elem':>7} {'MB':>7} {'bytes us':>8} {'issue us':>8} {'x':>2}"
    )
    print(header)
    for c in costs:
        grid = "x".join(str(g) for g in c.grid)
        shape = f"{c.height}x{c.width}x{c.channels}"
        print(
            f"{c.model:6} {c.batch:>5} {c.stage:>5} {shape:>12} {c.name:20} {grid:>16} "
            f"{c.programs_per_sm:>8} {c.warps:>5} {c.registers:>4} {c.spill_bytes:>5} "
            f"{c.shared_bytes:>6} {c.sass_instructions:>5} {c.warp_instructions_per_element:>7} "
            f"{c.bytes_moved / 1e6:>7.1f} {c.bytes_floor_us:>8} {c.issue_floor_us:>8} "
            f"{c.blocks:>2}"
        )
    print()
    print("per training step (every SS2D block, forward + backward):")
    for entry in step_totals(costs):
        print(
            f"  DASS-{entry['model']} batch {entry['batch']}: {entry['launches']} scan launches, "
            f"bytes floor {entry['bytes_floor_ms']} ms at 4.8 TB/s, "
            f"issue floor {entry['issue_floor_ms']} ms"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["small", "medium"],
                        choices=["small", "medium"])  # fmt: skip
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16",
                        help="dtype of the maps (bf16: a bf16-autocast step)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 on a spill or < 4 programs/SM (DASS-small)"
    )
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        fail("TRITON_INTERPRET=1 is set: unset it to compile for a GPU target")
    if any(b < 1 for b in args.batches):
        fail(f"--batches must be positive, got {args.batches}")
    try:
        import triton  # noqa: F401
    except ImportError as error:
        fail(f"triton is not installed ({error}); it comes with torch's Linux wheels")
    costs = measure(args.models, args.batches, args.dtype)
    problems = check(costs)
    if args.json:
        print(
            json.dumps(
                {
                    "target": f"sm_{TARGET_CAPABILITY}",
                    "processors": PROCESSORS,
                    "dtype": args.dtype,
                    "input": list(segment_shape()),
                    "launches": [c.as_json() for c in costs],
                    "steps": step_totals(costs),
                    "problems": problems,
                }
            )
        )
    else:
        print_table(costs)
        for problem in problems:
            print(f"TARGET MISSED: {problem}")
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
