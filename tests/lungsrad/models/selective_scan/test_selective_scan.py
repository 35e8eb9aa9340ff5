"""Selective-scan backends against the sequential reference: outputs and gradients."""

from __future__ import annotations

import importlib
import logging

import pytest
import torch

from lungsrad.models.selective_scan import (
    INSTALL_COMMAND,
    available_backends,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)
from lungsrad.models.selective_scan.chunked import default_chunk_size
from lungsrad.models.selective_scan.mamba_ssm import is_mamba_ssm_installed, kernel_arguments

# `lungsrad.models.selective_scan` the attribute is the function; the module comes from importlib.
scan_module = importlib.import_module("lungsrad.models.selective_scan")
CUDA_AND_MAMBA = torch.cuda.is_available() and is_mamba_ssm_installed()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_mamba = pytest.mark.skipif(
    not CUDA_AND_MAMBA, reason="needs a CUDA device and mamba-ssm (pip install '.[cuda]')"
)


def make_inputs(
    batch: int = 2,
    channels: int = 8,
    groups: int = 4,
    state: int = 1,
    length: int = 37,
    *,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    seed: int = 0,
    with_skip: bool = True,
    with_bias: bool = True,
) -> list[torch.Tensor | None]:
    """Random scan inputs with strong decays and input-dependent gates, all requiring grad."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    tensors = [
        randn(batch, channels, length),  # u
        randn(batch, channels, length, scale=0.7),  # delta (before bias and softplus)
        -torch.exp(randn(channels, state, scale=0.8)).to(dtype),  # A in about [-5, -0.2]
        randn(batch, groups, state, length),  # B
        randn(batch, groups, state, length),  # C
        randn(channels) if with_skip else None,  # D
        randn(channels, scale=0.5) if with_bias else None,  # delta_bias
    ]
    return [t.to(device).requires_grad_() if t is not None else None for t in tensors]


def outputs_and_grads(
    fn, inputs: list[torch.Tensor | None], *, seed: int = 1, **kwargs
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    y = fn(*inputs, **kwargs)
    weights = torch.randn(
        y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    loss = (y * weights.to(y.device, y.dtype)).sum()
    present = [t for t in inputs if t is not None]
    grads = iter(torch.autograd.grad(loss, present))
    return y.detach(), [next(grads) if t is not None else None for t in inputs]


def assert_all_close(actual, expected, *, rtol: float, atol: float) -> None:
    names = ["u", "delta", "A", "B", "C", "D", "delta_bias"]
    for name, a, e in zip(names, actual, expected, strict=True):
        assert (a is None) == (e is None), name
        if a is not None:
            torch.testing.assert_close(
                a, e, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}"
            )


SHAPES = [
    # batch, channels, groups, state, length, chunk size
    pytest.param(2, 8, 4, 1, 37, None, id="dass-like-4-groups"),
    pytest.param(2, 8, 4, 1, 37, 5, id="padded-last-chunk"),
    pytest.param(1, 6, 1, 1, 100, 10, id="one-group-exact-chunks"),
    pytest.param(2, 6, 3, 2, 64, 8, id="state-2"),
    pytest.param(3, 4, 2, 1, 1, None, id="length-1"),
    pytest.param(2, 4, 4, 1, 130, 130, id="single-chunk"),
]


@pytest.mark.parametrize(("batch", "channels", "groups", "state", "length", "chunk"), SHAPES)
def test_chunked_matches_reference_float64(batch, channels, groups, state, length, chunk):
    inputs = make_inputs(batch, channels, groups, state, length)
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, inputs)
    y, g = outputs_and_grads(selective_scan_chunked, inputs, chunk_size=chunk)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    assert_all_close(g, g_ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("softplus", [True, False])
def test_chunked_without_skip_or_bias(softplus):
    inputs = make_inputs(2, 8, 2, 1, 50, with_skip=False, with_bias=False)
    if not softplus:  # delta must stay positive without softplus
        inputs[1] = inputs[1].detach().abs().requires_grad_()
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, inputs, delta_softplus=softplus)
    y, g = outputs_and_grads(selective_scan_chunked, inputs, delta_softplus=softplus, chunk_size=7)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    assert_all_close(g, g_ref, rtol=1e-9, atol=1e-11)


def test_ungrouped_three_dimensional_gates():
    u, delta, A, B, C, D, bias = make_inputs(2, 6, 1, 2, 40)
    flat = [
        u,
        delta,
        A,
        B[:, 0].detach().requires_grad_(),
        C[:, 0].detach().requires_grad_(),
        D,
        bias,
    ]
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, flat)
    y, g = outputs_and_grads(selective_scan_chunked, flat, chunk_size=9)
    torch.testing.assert_close(y, y_ref)
    assert g[3].shape == flat[3].shape
    assert_all_close(g, g_ref, rtol=1e-9, atol=1e-11)


def test_chunked_float32_long_sequence_matches_float64_reference():
    # DASS stage 0 has L = 6400; strong decays over long spans must not lose float32 accuracy.
    inputs64 = make_inputs(1, 4, 2, 1, 6400, seed=3)
    with torch.no_grad():
        y_ref = selective_scan_reference(*inputs64)
    inputs32 = [t.detach().float().requires_grad_() if t is not None else None for t in inputs64]
    y32, g32 = outputs_and_grads(selective_scan_chunked, inputs32)
    assert y32.dtype == torch.float32
    scale = y_ref.abs().max()
    assert (y32.double() - y_ref).abs().max() <= 1e-5 * scale
    # Gradients: float64 chunked is the reference here (it equals the loop on short shapes).
    _, g64 = outputs_and_grads(selective_scan_chunked, inputs64)
    for name, a, e in zip(["u", "delta", "A", "B", "C", "D", "bias"], g32, g64, strict=True):
        assert (a.double() - e).abs().max() <= 1e-4 * e.abs().max(), name


def test_expanded_output_gradient():
    # y.sum() hands the backward an expanded (stride 0) gradient.
    inputs = make_inputs(2, 8, 4, 1, 30)
    grads = torch.autograd.grad(selective_scan_chunked(*inputs).sum(), inputs)
    expected = torch.autograd.grad(selective_scan_reference(*inputs).sum(), inputs)
    assert_all_close(grads, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("length", [6400, 1600, 400, 100, 832, 53, 30])
def test_default_chunk_size_avoids_padding_when_it_can(length):
    size = default_chunk_size(length)
    assert 1 <= size <= length
    if length in (6400, 1600, 400, 100, 832, 30):
        assert length % size == 0


def test_half_inputs_are_scanned_in_float32():
    inputs = make_inputs(1, 4, 2, 1, 30, dtype=torch.float32)
    half = [t.detach().bfloat16().requires_grad_() if t is not None else None for t in inputs]
    y, grads = outputs_and_grads(selective_scan_chunked, half)
    assert y.dtype == torch.float32
    assert all(g.dtype == torch.bfloat16 for g in grads if g is not None)
    y_ref = selective_scan_reference(*[t.detach() if t is not None else None for t in half])
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_dispatch_auto_uses_chunked_on_cpu_and_logs_once(caplog, monkeypatch):
    monkeypatch.setattr(scan_module, "_logged_choices", set())
    inputs = make_inputs(1, 4, 2, 1, 20)
    with caplog.at_level(logging.INFO, logger=scan_module.__name__):
        y = selective_scan(*inputs, backend="auto")
        selective_scan(*inputs, backend="auto")
    messages = [r.getMessage() for r in caplog.records if "backend 'auto'" in r.getMessage()]
    assert len(messages) == 1 and "'chunked'" in messages[0]
    torch.testing.assert_close(y, selective_scan_chunked(*inputs))


def test_available_backends():
    backends = available_backends()
    assert backends[:2] == ("reference", "chunked")
    assert ("mamba_ssm" in backends) == CUDA_AND_MAMBA


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="unknown selective scan backend 'cuda'"):
        selective_scan(*make_inputs(1, 4, 2, 1, 5), backend="cuda")


def test_mamba_ssm_on_cpu_tensors_fails_clearly():
    inputs = make_inputs(1, 4, 2, 1, 5, dtype=torch.float32)
    if is_mamba_ssm_installed():
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            selective_scan(*inputs, backend="mamba_ssm")
    else:
        with pytest.raises(ImportError, match="not available") as error:
            selective_scan(*inputs, backend="mamba_ssm")
        assert INSTALL_COMMAND in str(error.value)


def test_mamba_kernel_arguments_follow_the_kernel_checks():
    # selective_scan_cuda requires u, delta, B, C in one dtype and A, D, delta_bias in float32.
    u, delta, A, B, C, D, bias = (t.detach() for t in make_inputs(2, 8, 4, 1, 12))
    projected = torch.randn(2, 4, 3, 12, dtype=torch.bfloat16)  # like SS2D's x_proj output
    gate_b = projected[:, :, 1:2]  # a non-contiguous slice, as in the model
    arguments = kernel_arguments(u.bfloat16(), delta.float(), A, gate_b, C, D, bias)
    dtypes = [a.dtype for a in arguments]
    assert (
        dtypes
        == [torch.bfloat16] * 2 + [torch.float32] + [torch.bfloat16] * 2 + [torch.float32] * 2
    )
    assert all(a.is_contiguous() for a in arguments)
    assert kernel_arguments(u, delta, A, B, C, None, None)[5:] == (None, None)


@pytest.mark.parametrize(
    ("index", "shape", "match"),
    [
        (1, (1, 4, 6), "u and delta"),
        (2, (5, 1), "A must be"),
        (3, (1, 3, 1, 5), "B must be"),
        (4, (1, 2, 1, 6), "C must be"),
        (5, (3,), "D must be"),
        (6, (5,), "delta_bias must be"),
    ],
)
def test_shape_errors(index, shape, match):
    inputs = make_inputs(1, 4, 2, 1, 5)
    inputs[index] = torch.randn(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        selective_scan(*inputs, backend="chunked")


# ---------------------------------------------------------------------------------------------
# GPU


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_pytorch_backends_on_cuda_match_cpu(backend):
    inputs = make_inputs(2, 8, 4, 1, 45)
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, inputs)
    cuda_inputs = [t.detach().cuda().requires_grad_() if t is not None else None for t in inputs]
    y, g = outputs_and_grads(lambda *a: selective_scan(*a, backend=backend), cuda_inputs)
    torch.testing.assert_close(y.cpu(), y_ref)
    assert_all_close([t.cpu() for t in g], g_ref, rtol=1e-9, atol=1e-11)


@pytest.mark.gpu
@needs_mamba
@pytest.mark.parametrize(("state", "length"), [(1, 37), (1, 2500), (2, 64)])
def test_mamba_ssm_matches_reference(state, length):
    inputs = make_inputs(2, 8, 4, state, length, dtype=torch.float32, device="cuda")
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, inputs)
    y, g = outputs_and_grads(lambda *a: selective_scan(*a, backend="mamba_ssm"), inputs)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    assert_all_close(g, g_ref, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@needs_mamba
def test_mamba_ssm_half_inputs_return_float32():
    inputs = make_inputs(2, 8, 4, 1, 200, dtype=torch.float32, device="cuda")
    half = [t.detach().bfloat16() if t is not None else None for t in inputs]
    half[2], half[5], half[6] = inputs[2].detach(), inputs[5].detach(), inputs[6].detach()
    y = selective_scan(*half, backend="mamba_ssm")
    assert y.dtype == torch.float32
    y_ref = selective_scan_reference(*half)
    torch.testing.assert_close(y, y_ref, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@needs_mamba
def test_auto_picks_mamba_ssm_on_cuda():
    inputs = make_inputs(1, 4, 2, 1, 10, dtype=torch.float32, device="cuda")
    y = selective_scan(*inputs, backend="auto")
    torch.testing.assert_close(y, selective_scan(*inputs, backend="mamba_ssm"))
