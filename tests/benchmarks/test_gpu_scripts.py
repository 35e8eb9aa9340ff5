"""The GPU scripts on a CPU host: `--help`, one-line refusals without CUDA, and scan_gpu.py's
cases (stage maps from the model, gradients that never accumulate, the bytes-moved floor)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPOSITORY = Path(__file__).resolve().parents[2]
BENCHMARKS = REPOSITORY / "benchmarks"
NO_CUDA = {
    **os.environ,
    "CUDA_VISIBLE_DEVICES": "",  # no device even on a GPU host
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])),
}


@pytest.fixture(scope="module")
def scan_gpu():
    spec = importlib.util.spec_from_file_location("scan_gpu", BENCHMARKS / "scan_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["scan_gpu"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["scan_gpu"]


def run(*command: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=REPOSITORY,
        env={**NO_CUDA, **environment},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # two interpreters that import torch: a few seconds each on a busy machine
def test_scan_gpu_help_and_no_cuda_refusal():
    shown = run(sys.executable, str(BENCHMARKS / "scan_gpu.py"), "--help")
    assert shown.returncode == 0 and "--backends" in shown.stdout, shown.stderr
    refused = run(sys.executable, str(BENCHMARKS / "scan_gpu.py"), "--stages", "0")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "no CUDA device" in refused.stderr


@pytest.mark.slow  # two interpreters that import torch: a few seconds each on a busy machine
def test_gpu_check_sh_refuses_without_cuda_in_one_line():
    refused = run("bash", str(BENCHMARKS / "gpu_check.sh"), PYTHON=sys.executable)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stdout == "" and refused.stderr.count("\n") == 1
    assert "no CUDA device visible to torch" in refused.stderr


def test_stage_maps_come_from_the_model(scan_gpu):
    maps = scan_gpu.stage_maps("small", 798, 128)
    assert maps == [(96, 32, 200), (192, 16, 100), (384, 8, 50), (768, 4, 25)]
    assert scan_gpu.stage_maps("medium", 37, 21) == [
        (96, 6, 10),
        (192, 3, 5),
        (384, 2, 3),
        (768, 1, 2),
    ]
    arguments = scan_gpu.parse_arguments([])
    assert (arguments.frames, arguments.mel_bins) == (798, 128)  # the data config's segment


@pytest.mark.parametrize("kind", ["scan", "ss2d"])
def test_forward_backward_returns_gradients_and_accumulates_none(scan_gpu, kind):
    make = scan_gpu.scan_cases if kind == "scan" else scan_gpu.ss2d_cases
    (case,) = make(8, 3, 5, batch=2, dtype=torch.float32, backends=["chunked"], device="cpu")
    first, second = case.forward_backward(), case.forward_backward()
    assert [g.shape for g in first] == [t.shape for t in case.inputs]
    assert all(t.grad is None for t in case.inputs)
    torch.testing.assert_close(first, second)  # nothing carried over from the first call
    assert all(g.abs().sum() > 0 for g in first[:2])
    assert not case.forward_only().requires_grad


def test_floor_counts_the_bytes_a_scan_must_move(scan_gpu):
    batch, channels, height, width = 2, 8, 3, 5
    length, scanned = height * width, 4 * channels
    (case,) = scan_gpu.scan_cases(
        channels,
        height,
        width,
        batch=batch,
        dtype=torch.bfloat16,
        backends=["chunked"],
        device="cpu",
    )
    # u, delta (batch, 4C, L) and B, C (batch, 4, 1, L) in bf16; A, D, bias float32; y float32.
    inputs = 2 * (2 * batch * scanned * length) + 2 * (2 * batch * 4 * length) + 3 * 4 * scanned
    output = 4 * batch * scanned * length
    assert case.floor_bytes() == (inputs + output, inputs + output + output + 2 * inputs)
