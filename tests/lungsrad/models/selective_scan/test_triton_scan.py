"""The `triton` scan backend: interpreter checks (in a subprocess), dispatch, errors, GPU checks."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_selective_scan import assert_all_close, make_inputs, outputs_and_grads

from lungsrad.config import DataConfig, config_from_dict
from lungsrad.data.features import expected_num_frames
from lungsrad.models import DASS
from lungsrad.models.dass import SS2D
from lungsrad.models.selective_scan import (
    available_backends,
    resolve_backend,
    selective_scan,
    selective_scan_reference,
    ss2d_scan_triton,
)
from lungsrad.models.selective_scan.triton import (
    LaunchConfig,
    is_interpreter_on,
    is_triton_installed,
)
from tests.golden import shared_folder

scan_module = importlib.import_module("lungsrad.models.selective_scan")
REPOSITORY = Path(__file__).resolve().parents[4]
INTERPRETER_TESTS = Path(__file__).with_name("test_triton_interpreter.py")
needs_triton = pytest.mark.skipif(not is_triton_installed(), reason="triton does not import")
needs_cuda_triton = pytest.mark.skipif(
    not (torch.cuda.is_available() and is_triton_installed()), reason="needs CUDA and triton"
)
ICBHI_SEGMENT = (expected_num_frames(DataConfig()), DataConfig().num_mel_bins)  # (798, 128)
with torch.device("meta"):
    # (C, H, W) of DASS-small's four stage maps on an ICBHI segment: (96, 32, 200) ... (768, 4, 25)
    DASS_SMALL_MAPS = DASS.small().stage_maps(*ICBHI_SEGMENT)


@needs_triton
@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter tests run in this process"
)
def test_kernels_under_the_interpreter():
    # TRITON_INTERPRET is read when the kernels are decorated, and this process may have built
    # them for a GPU already: a fresh interpreter runs the kernel checks.
    environment = {**os.environ, "TRITON_INTERPRET": "1"}
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")])
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(INTERPRETER_TESTS)],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = output.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, output


@needs_triton
@pytest.mark.skipif(is_interpreter_on(), reason="Triton's interpreter is on in this process")
def test_triton_on_cpu_tensors_fails_in_one_line():
    inputs = make_inputs(1, 4, 2, 1, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"backend 'triton' needs CUDA tensors") as error:
        selective_scan(*inputs, backend="triton")
    message = str(error.value)
    assert "\n" not in message and "TRITON_INTERPRET=1" in message and "'chunked'" in message


@needs_triton
@pytest.mark.skipif(is_interpreter_on(), reason="Triton's interpreter is on in this process")
def test_dass_with_triton_on_cpu_fails_in_one_line():
    model = DASS(num_classes=2, dims=(8, 16), depths=(1, 1), scan_backend="triton")
    with pytest.raises(ValueError, match=r"backend 'triton' needs CUDA tensors.*'chunked'"):
        model(torch.randn(1, 16, 8))


def test_missing_triton_fails_in_one_line(monkeypatch):
    availability = importlib.import_module("lungsrad.models.selective_scan.triton.availability")
    monkeypatch.setattr(
        availability, "_load_kernels", lambda: ImportError("No module named 'triton'")
    )
    with pytest.raises(ImportError, match=r"backend 'triton' is not available.*'chunked'"):
        selective_scan(*make_inputs(1, 4, 2, 1, 5), backend="triton")
    with pytest.raises(ImportError, match=r"backend 'triton' is not available"):
        DASS(num_classes=2, dims=(8, 16), depths=(1, 1), scan_backend="triton")


@needs_triton
def test_auto_picks_triton_for_cuda_tensors_and_says_why(caplog, monkeypatch):
    # Choosing touches no GPU: this runs anywhere triton imports.
    monkeypatch.setattr(scan_module, "_logged_choices", set())
    with caplog.at_level(logging.INFO, logger=scan_module.__name__):
        assert resolve_backend("auto", torch.device("cuda")) == "triton"
        assert resolve_backend("auto", torch.device("cuda")) == "triton"
        assert resolve_backend("auto", torch.device("cpu")) == "chunked"
    messages = [r.getMessage() for r in caplog.records if "backend 'auto'" in r.getMessage()]
    assert len(messages) == 2
    assert "on cuda: using 'triton' (" in messages[0] and "triton imports" in messages[0]
    assert "on cpu: using 'chunked'" in messages[1]


@needs_triton
def test_auto_skips_triton_for_d_state_above_one(caplog, monkeypatch):
    monkeypatch.setattr(scan_module, "_logged_choices", set())
    monkeypatch.setattr(scan_module, "is_mamba_ssm_installed", lambda: False)
    with caplog.at_level(logging.INFO, logger=scan_module.__name__):
        assert resolve_backend("auto", torch.device("cuda"), d_state=2) == "chunked"
    (record,) = [r for r in caplog.records if "backend 'auto'" in r.getMessage()]
    assert "triton needs d_state 1, not 2" in record.getMessage()


def test_auto_on_cuda_without_triton_or_mamba_warns(caplog, monkeypatch):
    monkeypatch.setattr(scan_module, "_logged_choices", set())
    monkeypatch.setattr(scan_module, "is_triton_installed", lambda: False)
    monkeypatch.setattr(scan_module, "is_mamba_ssm_installed", lambda: False)
    with caplog.at_level(logging.INFO, logger=scan_module.__name__):
        assert resolve_backend("auto", torch.device("cuda")) == "chunked"
    (record,) = [r for r in caplog.records if "backend 'auto'" in r.getMessage()]
    assert record.levelno == logging.WARNING and "SLOW" in record.getMessage()


def test_triton_is_listed_where_it_can_run():
    expected = is_triton_installed() and (torch.cuda.is_available() or is_interpreter_on())
    assert ("triton" in available_backends()) == expected


def test_config_accepts_triton_backend():
    config = config_from_dict({"model": {"scan_backend": "triton"}})
    assert config.model.scan_backend == "triton"


@needs_triton
def test_triton_backend_keeps_parameter_names_and_shapes():
    # Checkpoint compatibility: the fused path adds no parameter and reshapes none.
    fused = DASS(num_classes=2, dims=(8, 16), depths=(1, 1), scan_backend="triton")
    plain = DASS(num_classes=2, dims=(8, 16), depths=(1, 1), scan_backend="chunked")
    assert {k: v.shape for k, v in fused.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }
    plain.load_state_dict(fused.state_dict())


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
@needs_cuda_triton
@pytest.mark.parametrize(
    ("batch", "channels", "groups", "length", "dtype"),
    [
        (2, 8, 4, 37, torch.float64),
        (2, 384, 4, 2500, torch.float32),
        (3, 12, 1, 1, torch.float32),
    ],
)
def test_triton_matches_reference_on_cuda(batch, channels, groups, length, dtype):
    inputs = make_inputs(batch, channels, groups, 1, length, dtype=dtype, device="cuda")
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, inputs)
    y, g = outputs_and_grads(lambda *a: selective_scan(*a, backend="triton"), inputs)
    assert y.dtype == dtype
    if dtype == torch.float64:
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
        assert_all_close(g, g_ref, rtol=1e-9, atol=1e-11)
    else:  # float32 sums over thousands of steps in another order
        torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
        assert_all_close(g, g_ref, rtol=1e-3, atol=1e-3)


def ss2d_step(module: torch.nn.Module, x: torch.Tensor, weights: torch.Tensor) -> list:
    x = x.detach().requires_grad_()
    y = module(x)
    grads = torch.autograd.grad((y.float() * weights).sum(), [x, *module.parameters()])
    return [y.detach().float(), *grads]


def ss2d_pair(dim: int) -> tuple[SS2D, SS2D]:
    torch.manual_seed(0)
    chunked = SS2D(dim, scan_backend="chunked").cuda()
    with torch.no_grad():
        chunked.A_logs.normal_(0.0, 0.5)
        chunked.Ds.normal_()
    fused = SS2D(dim, scan_backend="triton").cuda()
    fused.load_state_dict(chunked.state_dict())
    return chunked, fused


@pytest.mark.gpu
@needs_cuda_triton
@pytest.mark.parametrize(("dim", "height", "width"), DASS_SMALL_MAPS)
def test_fused_ss2d_matches_chunked_at_dass_small_shapes(dim, height, width):
    # The four stage maps of DASS-small on an ICBHI segment (128 mel bins x 798 frames).
    chunked, fused = ss2d_pair(dim)
    # Batch 16 as in training: the launch heuristic sums the directions inside a program for
    # the wide stages and gives each direction its own program for the long ones.
    x = torch.randn(16, dim, height, width, device="cuda").contiguous(
        memory_format=torch.channels_last
    )
    weights = torch.randn(16, dim, height, width, device="cuda")
    expected, actual = ss2d_step(chunked, x, weights), ss2d_step(fused, x, weights)
    names = ["y", "x", *(name for name, _ in fused.named_parameters())]
    for name, a, e in zip(names, actual, expected, strict=True):
        scale = e.abs().max()
        assert (a - e).abs().max() <= 1e-4 * scale + 1e-6, name


@pytest.mark.gpu
@needs_cuda_triton
@pytest.mark.parametrize(("channels", "height", "width"), [DASS_SMALL_MAPS[0], DASS_SMALL_MAPS[-1]])
def test_fused_scan_launch_variants_agree_on_cuda(channels, height, width):
    # The launch table's plan against other chunk lengths, channel blocks and warps.
    length, batch = height * width, 16
    generator = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", generator=generator) * scale

    inputs = [
        randn(batch, length, channels).bfloat16(),
        randn(4, batch, length, channels, scale=0.5).bfloat16(),
        -torch.exp(randn(4 * channels, 1, scale=0.5)),
        randn(batch, 4, length).bfloat16(),
        randn(batch, 4, length).bfloat16(),
        randn(4 * channels),
        randn(4 * channels, scale=0.5) - 3.0,
    ]
    inputs = [t.requires_grad_() for t in inputs]
    plans = [None, LaunchConfig(64, 8, 8, 16, 8, 4, 4), LaunchConfig(16, 32, 32, 64, 32, 2, 8)]
    results = [
        outputs_and_grads(ss2d_scan_triton, inputs, height=height, width=width, launch=plan)
        for plan in plans
    ]
    for y, grads in results[1:]:
        torch.testing.assert_close(y, results[0][0], rtol=1e-5, atol=1e-5)
        for a, e in zip(grads, results[0][1], strict=True):
            torch.testing.assert_close(a.float(), e.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@needs_cuda_triton
def test_fused_ss2d_under_bf16_autocast():
    chunked, fused = ss2d_pair(DASS_SMALL_MAPS[0][0])
    x = torch.randn(2, *DASS_SMALL_MAPS[0], device="cuda")
    weights = torch.randn(2, *DASS_SMALL_MAPS[0], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        expected, actual = ss2d_step(chunked, x, weights), ss2d_step(fused, x, weights)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype
        assert (a.float() - e.float()).abs().max() <= 2e-2 * e.float().abs().max()


@pytest.mark.gpu
@needs_cuda_triton
def test_fused_ss2d_under_torch_compile():
    _, fused = ss2d_pair(DASS_SMALL_MAPS[0][0])
    compiled = torch.compile(fused)
    x = torch.randn(2, *DASS_SMALL_MAPS[0], device="cuda")
    weights = torch.randn(2, *DASS_SMALL_MAPS[0], device="cuda")
    expected, actual = ss2d_step(fused, x, weights), ss2d_step(compiled, x, weights)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@needs_cuda_triton
def test_dass_small_trains_a_step_with_triton():
    torch.manual_seed(0)
    model = DASS.small(scan_backend="triton").cuda()
    fbank = torch.randn(2, *ICBHI_SEGMENT, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(fbank).float().logsumexp(-1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.gpu
@needs_cuda_triton
def test_golden_logits_with_triton_on_cuda(monkeypatch):
    # The reference implementation's logits (shared/dass_reference), through the fused kernels.
    golden_path = shared_folder("dass_reference", "dass_tiny.pt") / "dass_tiny.pt"
    from lungsrad.models import load_dass_checkpoint

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    golden = torch.load(golden_path, map_location="cpu", weights_only=True)
    model = DASS(num_classes=4, dims=(32, 64, 128, 256), depths=(1, 1, 2, 1), scan_backend="triton")
    load_dass_checkpoint(model, golden["state_dict"])
    with torch.no_grad():
        logits = model.cuda().eval()(golden["input"].cuda())
    torch.testing.assert_close(logits.cpu(), golden["logits"], atol=1e-4, rtol=0)
