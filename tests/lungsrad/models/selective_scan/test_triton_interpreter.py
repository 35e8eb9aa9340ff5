"""The `triton` scan kernels under Triton's interpreter, against the reference: outputs and grads.

Runs only with TRITON_INTERPRET=1 set before triton is imported; `test_triton_scan.py` starts
this module in such a subprocess, so CI checks every kernel path without a GPU. Shapes are tiny
(the interpreter runs each scan as a Python loop) but always cover several chunks, several
channel blocks with a partial one, and batch > 1.
"""

from __future__ import annotations

import os

import pytest
import torch
from test_selective_scan import assert_all_close, make_inputs, outputs_and_grads

from lungsrad.models import DASS
from lungsrad.models.dass import SS2D, cross_merge, cross_scan
from lungsrad.models.selective_scan import (
    available_backends,
    selective_scan,
    selective_scan_reference,
    selective_scan_triton,
    ss2d_scan_triton,
)
from lungsrad.models.selective_scan.triton import (
    LaunchConfig,
    is_interpreter_on,
    triton_scan_forward,
)

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "needs TRITON_INTERPRET=1 before triton is imported (test_triton_scan.py runs it)",
        allow_module_level=True,
    )


def plan(
    block_t: int, block_c: int, *, backward_block_c: int | None = None, carry_block: int = 2
) -> LaunchConfig:
    """A launch with these tiles (the carry composes `carry_block` chunks per step)."""
    backward = backward_block_c or block_c
    return LaunchConfig(block_t, block_c, backward, carry_block, block_c, 4, 4)


SHAPES = [
    # batch, channels, groups, length, launch
    pytest.param(2, 8, 4, 37, plan(8, 4), id="dass-like-chunks-and-blocks"),
    pytest.param(1, 6, 1, 19, plan(16, 4), id="one-group-partial-channel-block"),
    pytest.param(3, 4, 2, 1, plan(16, 8), id="length-1"),
    pytest.param(2, 6, 3, 16, plan(16, 2), id="one-exact-chunk"),
    pytest.param(2, 4, 2, 45, plan(4, 4, carry_block=2), id="many-chunks-partial-last"),
    pytest.param(1, 4, 2, 64, plan(4, 4, carry_block=4), id="many-chunks-exact"),
    pytest.param(2, 6, 2, 23, plan(8, 4, backward_block_c=2), id="backward-narrower-blocks"),
]


def test_interpreter_is_on_and_backend_available():
    assert is_interpreter_on()
    assert "triton" in available_backends()


@pytest.mark.parametrize(("batch", "channels", "groups", "length", "launch"), SHAPES)
def test_plain_scan_matches_reference_float64(batch, channels, groups, length, launch):
    inputs = make_inputs(batch, channels, groups, 1, length)
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, inputs)
    y, g = outputs_and_grads(selective_scan_triton, inputs, launch=launch)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    assert_all_close(g, g_ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("softplus", [True, False])
def test_plain_scan_without_skip_or_bias(softplus):
    inputs = make_inputs(2, 4, 2, 1, 21, with_skip=False, with_bias=False)
    if not softplus:  # delta must stay positive without softplus
        inputs[1] = inputs[1].detach().abs().requires_grad_()
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, inputs, delta_softplus=softplus)
    y, g = outputs_and_grads(
        selective_scan_triton, inputs, delta_softplus=softplus, launch=plan(8, 2)
    )
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    assert_all_close(g, g_ref, rtol=1e-9, atol=1e-11)


def test_dispatch_and_three_dimensional_gates():
    u, delta, A, B, C, D, bias = make_inputs(2, 4, 1, 1, 20)
    flat = [u, delta, A, B[:, 0].detach().requires_grad_(), C[:, 0].detach(), D, bias]
    flat[4].requires_grad_()
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, flat)
    y, g = outputs_and_grads(lambda *a: selective_scan(*a, backend="triton"), flat)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    assert g[3].shape == flat[3].shape
    assert_all_close(g, g_ref, rtol=1e-9, atol=1e-11)


def test_float32_state_arithmetic():
    inputs64 = make_inputs(2, 4, 2, 1, 40, seed=5)
    inputs32 = [t.detach().float().requires_grad_() for t in inputs64]
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, inputs64)
    y, g = outputs_and_grads(selective_scan_triton, inputs32, launch=plan(16, 4))
    assert y.dtype == torch.float32 and all(t.dtype == torch.float32 for t in g)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    assert_all_close([t.double() for t in g], g_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_return_float32(dtype):
    inputs = make_inputs(2, 4, 2, 1, 24, dtype=torch.float32)
    half = [t.detach().to(dtype).requires_grad_() for t in inputs]
    y, g = outputs_and_grads(selective_scan_triton, half, launch=plan(8, 4))
    assert y.dtype == torch.float32
    assert all(t.dtype == dtype for t in g)
    # The reference on the same half-precision values, scanned in float32.
    y_ref, g_ref = outputs_and_grads(selective_scan_reference, half)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    assert_all_close(
        [t.float() for t in g], [t.float() for t in g_ref], rtol=2e-2, atol=2e-2
    )  # the gradients are rounded to half precision


def test_d_state_above_one_is_refused():
    inputs = make_inputs(1, 4, 2, 2, 10)
    with pytest.raises(ValueError, match=r"'triton' supports d_state N = 1 only, got N = 2"):
        selective_scan(*inputs, backend="triton")


def test_custom_op_passes_opcheck():
    u, delta, A, B, C, D, bias = (t.detach() for t in make_inputs(2, 4, 2, 1, 9))
    args = (u, delta, A[:, 0], B[:, :, 0], C[:, :, 0], D, bias, True, 0, 0, False)
    args = (*args, plan(4, 2).as_ints())
    for t in args[:7]:
        t.requires_grad_()
    torch.library.opcheck(triton_scan_forward, args)


def test_fused_custom_op_passes_opcheck():
    inputs = [t.detach().requires_grad_() for t in make_map_inputs(1, 2, 2, 3)]
    args = (*inputs[:2], inputs[2][:, 0], *inputs[3:], True, 2, 3, True, plan(4, 2).as_ints())
    torch.library.opcheck(triton_scan_forward, args)


# ---------------------------------------------------------------------------------------------
# Fused SS2D: the kernels read the four scan orders of the map and sum them into one map.


def make_map_inputs(
    batch: int, channels: int, height: int, width: int, *, seed: int = 0
) -> list[torch.Tensor]:
    """Fused-op inputs in map order: u (b, L, C), delta (4, b, L, C), A, B, C, D, delta_bias."""
    length = height * width
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale

    tensors = [
        randn(batch, length, channels),
        randn(4, batch, length, channels, scale=0.7),
        -torch.exp(randn(4 * channels, 1, scale=0.8)),
        randn(batch, 4, length),
        randn(batch, 4, length),
        randn(4 * channels),
        randn(4 * channels, scale=0.5),
    ]
    return [t.requires_grad_() for t in tensors]


def scan_order(values: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(batch, L, C) map values -> (batch, 4, C, L): each direction's scan order (cross_scan)."""
    batch, length, channels = values.shape
    return cross_scan(values.transpose(1, 2).reshape(batch, channels, height, width))


def unfused_ss2d_scan(u, delta, A, B, C, D, bias, *, height: int, width: int) -> torch.Tensor:
    """The reference composition cross_merge(reference scan(cross_scan(...))) as (b, L, C)."""
    batch, length, channels = u.shape
    xs = scan_order(u, height, width).reshape(batch, 4 * channels, length)
    deltas = torch.stack(
        [scan_order(delta[k], height, width)[:, k] for k in range(4)], dim=1
    ).reshape(batch, 4 * channels, length)
    gates_b, gates_c = (
        torch.stack([scan_order(g[:, k, :, None], height, width)[:, k] for k in range(4)], 1)
        for g in (B, C)
    )  # (batch, 4, 1, L)
    ys = selective_scan_reference(xs, deltas, A, gates_b, gates_c, D, bias)
    merged = cross_merge(ys.view(batch, 4, channels, length), height, width)
    return merged.flatten(2).transpose(1, 2)


@pytest.mark.parametrize(
    ("batch", "channels", "height", "width", "launch"),
    [
        pytest.param(2, 3, 5, 7, plan(8, 2), id="h-not-w-chunks-blocks"),
        pytest.param(1, 3, 4, 3, plan(16, 2), id="one-chunk"),
        pytest.param(1, 2, 4, 4, plan(16, 2), id="one-exact-chunk"),
        pytest.param(2, 3, 7, 9, plan(4, 2, carry_block=2), id="many-chunks-partial-last"),
        pytest.param(1, 5, 4, 8, plan(4, 4, backward_block_c=2, carry_block=4), id="many-exact"),
    ],
)
def test_fused_ss2d_scan_matches_reference_composition(batch, channels, height, width, launch):
    inputs = make_map_inputs(batch, channels, height, width)
    expected = outputs_and_grads(unfused_ss2d_scan, inputs, height=height, width=width)
    actual = outputs_and_grads(ss2d_scan_triton, inputs, height=height, width=width, launch=launch)
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-10, atol=1e-12)
    assert_all_close(actual[1], expected[1], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("direction", [0, 1, 2, 3])
def test_fused_ss2d_scan_each_direction_alone(direction):
    # Zero output gates elsewhere isolate one direction's index arithmetic (the skip D too).
    u, delta, A, B, C, D, bias = make_map_inputs(1, 2, 3, 4, seed=direction)
    keep = torch.zeros(1, 4, 1, dtype=torch.float64)
    keep[:, direction] = 1
    inputs = [u, delta, A, B, (C * keep).detach().requires_grad_(), None, bias]
    expected = outputs_and_grads(unfused_ss2d_scan, inputs, height=3, width=4)
    actual = outputs_and_grads(
        ss2d_scan_triton, inputs, height=3, width=4, launch=plan(4, 2, carry_block=2)
    )
    assert expected[0].abs().max() > 0.1
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-10, atol=1e-12)
    assert_all_close(actual[1], expected[1], rtol=1e-9, atol=1e-11)


def ss2d_outputs_and_grads(module: SS2D, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    x = x.detach().requires_grad_()
    y = module(x)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    grads = torch.autograd.grad((y * weights).sum(), [x, *module.parameters()])
    return y.detach(), list(grads)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_ss2d_module_matches_unfused(dtype):
    torch.manual_seed(0)
    module = SS2D(12, scan_backend="chunked").to(dtype)
    with torch.no_grad():  # away from the init so that every gradient is sizeable
        module.A_logs.normal_(0.0, 0.5)
        module.Ds.normal_()
        module.dt_projs_bias.normal_(0.0, 0.5)
    x = torch.randn(2, 12, 3, 7, dtype=dtype).contiguous(memory_format=torch.channels_last)
    y_ref, g_ref = ss2d_outputs_and_grads(module, x)
    module.scan_backend = "triton"
    y, g = ss2d_outputs_and_grads(module, x)
    tolerance = {"rtol": 1e-9, "atol": 1e-11} if dtype == torch.float64 else {}
    torch.testing.assert_close(y, y_ref, **tolerance)
    names = ["x", *(name for name, _ in module.named_parameters())]
    for name, actual, expected in zip(names, g, g_ref, strict=True):
        assert expected.abs().max() > 0, name
        torch.testing.assert_close(actual, expected, **tolerance, msg=lambda m, n=name: f"{n}: {m}")


def test_dass_with_triton_backend_matches_chunked():
    torch.manual_seed(0)
    model = DASS(num_classes=3, dims=(8, 16), depths=(1, 1), scan_backend="chunked").eval()
    fbank = torch.randn(2, 20, 12)
    with torch.no_grad():
        expected = model(fbank)
        model.scan_backend = "triton"
        actual = model(fbank)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_fused_ss2d_compiles_in_one_graph():
    # Dynamo, fake tensors and the autograd registration (aot_eager: no C++ compiler needed).
    torch.manual_seed(0)
    module = SS2D(6, scan_backend="triton")
    x = torch.randn(2, 6, 3, 5)
    expected = ss2d_outputs_and_grads(module, x)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    actual = ss2d_outputs_and_grads(compiled, x)
    torch.testing.assert_close(actual[0], expected[0])
    for a, e in zip(actual[1], expected[1], strict=True):
        torch.testing.assert_close(a, e)


def test_shapes_the_kernels_cannot_take_are_refused():
    # 32-bit offsets inside a batch item: refused before anything is materialised.
    u = torch.zeros(()).expand(1, 2**16, 2**15)
    A, gates = torch.full((2**16, 1), -1.0), torch.zeros(()).expand(1, 1, 1, 2**15)
    with pytest.raises(ValueError, match=r"under 2\*\*31 elements per batch item.*'chunked'"):
        selective_scan(u, u, A, gates, gates, backend="triton")
    # More channel groups than a CUDA grid dimension holds.
    inputs = [t.detach() for t in make_inputs(1, 2**16 + 2, 2**16 + 2, 1, 2)]
    with pytest.raises(ValueError, match=r"cannot launch 65538 channel groups.*'chunked'"):
        selective_scan(*inputs, backend="triton")
