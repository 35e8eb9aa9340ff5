"""SS2D mixing matrices, their lag-profile response (against the matrix-route oracle of
dass_reference.py), and the curves of a real DASS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lungsrad.analysis.spectral.curves import ResponseCurve
from lungsrad.analysis.spectral.dass import (
    VARIANT_SCAN,
    VARIANT_SCANNED,
    VARIANT_SCANNED_SMOOTHED,
    VARIANT_SMOOTHED,
    ScanInputs,
    axis_responses,
    gaussian_frequency_response,
    lag_response,
    scan_lag_profile,
    spectral_response_curves,
    ss2d_scan_inputs,
)
from lungsrad.analysis.spectral.dass_reference import lag_profile, mixing_matrix
from lungsrad.analysis.spectral.driver import SpectralSummary
from lungsrad.config import config_from_dict
from lungsrad.method.spectral_regularization import gaussian_kernel1d
from lungsrad.models.dass import cross_merge, cross_scan


def _sequential_scan(u, delta, B, C, A, D):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t; y_t = C_t h_t + D u_t (d_state 1)."""
    state = torch.zeros(u.shape[:-1], dtype=u.dtype)
    outputs = []
    for t in range(u.shape[-1]):
        state = torch.exp(delta[..., t] * A) * state + delta[..., t] * B[..., t] * u[..., t]
        outputs.append(C[..., t] * state + D * u[..., t])
    return torch.stack(outputs, -1)


def _random_operands(shape, length, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def draw(*size):
        return torch.randn(*size, generator=generator, dtype=torch.float64)

    delta = F.softplus(draw(*shape, length) - 1)
    return (
        draw(*shape, length),
        delta,
        draw(*shape, length),
        draw(*shape, length),
        -torch.exp(draw(*shape) * 0.5),
        draw(*shape),
    )


def test_mixing_matrix_times_u_reproduces_the_recurrence():
    u, delta, B, C, A, D = _random_operands((2, 3), 50)
    matrix = mixing_matrix(delta, B, C, A, D)
    assert matrix.shape == (2, 3, 50, 50) and matrix.dtype == torch.float64
    assert torch.equal(matrix.triu(1), torch.zeros_like(matrix))
    y = (matrix @ u.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(y, _sequential_scan(u, delta, B, C, A, D), rtol=0, atol=1e-12)


def test_mixing_matrix_long_sequence_stays_finite():
    # Large cumulative delta: the upper triangle would overflow exp without the mask.
    u, delta, B, C, A, D = _random_operands((1,), 400, seed=1)
    matrix = mixing_matrix(delta * 50, B, C, A, D)
    assert torch.isfinite(matrix).all()


def test_lag_profile_hand_case_and_constant_scan():
    matrix = torch.tensor([[1.0, 0, 0], [2, 3, 0], [4, 5, 6]], dtype=torch.float64)
    torch.testing.assert_close(
        lag_profile(matrix), torch.tensor([10 / 3, 3.5, 4.0], dtype=torch.float64)
    )
    # Constant delta, B, C: M is Toeplitz, k[tau] = C exp(A delta tau) delta B (+ D at lag 0).
    n, step, gain_in, gain_out, rate, skip = 16, 0.3, 1.5, -0.7, -2.0, 0.4
    ones = torch.ones(n, dtype=torch.float64)
    profile = lag_profile(mixing_matrix(step * ones, gain_in * ones, gain_out * ones, rate, skip))
    lags = torch.arange(n, dtype=torch.float64)
    expected = gain_out * torch.exp(rate * step * lags) * step * gain_in
    expected[0] += skip
    torch.testing.assert_close(profile, expected, rtol=1e-12, atol=1e-14)
    frequencies = np.fft.rfftfreq(n)
    analytic = [
        abs(sum(expected[t].item() * np.exp(-2j * np.pi * f * t) for t in range(n)))
        for f in frequencies
    ]
    torch.testing.assert_close(
        lag_response(profile), torch.tensor(analytic, dtype=torch.float64), rtol=1e-10, atol=0
    )


@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_scan_lag_profile_equals_the_matrix_route(scale):
    u, delta, B, C, A, D = _random_operands((2, 3), 60, seed=4)
    # B and C shared across the 3 channels, as in SS2D (one group per direction).
    B, C = B[:, :1], C[:, :1]
    expected = lag_profile(mixing_matrix(delta * scale, B, C, A, D))
    got = scan_lag_profile(delta * scale, B, C, A, D)
    assert got.shape == (2, 3, 60)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-13)


def test_cross_scan_orders_and_merge():
    x = torch.arange(12, dtype=torch.float64).view(1, 1, 3, 4)  # H=3, W=4
    xs = cross_scan(x)
    assert xs.shape == (1, 4, 1, 12)
    assert xs[0, 0, 0].tolist() == x[0, 0].flatten().tolist()  # along time inside a mel row
    assert xs[0, 1, 0].tolist() == x[0, 0].T.flatten().tolist()  # along frequency in a frame
    assert torch.equal(xs[0, 2, 0], xs[0, 0, 0].flip(0))
    assert torch.equal(xs[0, 3, 0], xs[0, 1, 0].flip(0))
    torch.testing.assert_close(cross_merge(xs, 3, 4), 4 * x)


def test_gaussian_frequency_response():
    response = gaussian_frequency_response(5, 1.0, 16)
    assert response.shape == (9,)
    assert response[0].item() == pytest.approx(1.0)
    assert (response[1:] <= response[:-1] + 1e-12).all()  # low-pass
    kernel = gaussian_kernel1d(5, 1.0).to(torch.float64)
    circular = torch.zeros(16, dtype=torch.float64)
    circular[torch.arange(-2, 3) % 16] = kernel
    torch.testing.assert_close(response, torch.fft.rfft(circular).abs(), rtol=0, atol=1e-7)


def test_axis_response_uses_the_diagonal_blocks_of_the_full_matrix():
    height, width, channels = 3, 5, 2
    length = height * width
    generator = torch.Generator().manual_seed(2)

    def draw(*size):
        return torch.randn(*size, generator=generator, dtype=torch.float64)

    inputs = ScanInputs(
        u=draw(1, 4, channels, length),
        delta=F.softplus(draw(1, 4, channels, length)),
        B=draw(1, 4, length),
        C=draw(1, 4, length),
        A=-torch.exp(draw(4, channels)),
        D=draw(4, channels),
        height=height,
        width=width,
    )
    for axis, direction, segments, cells in (
        ("time", 0, height, width),
        ("freq", 1, width, height),
    ):
        expected = []
        for channel in range(channels):
            full = mixing_matrix(
                inputs.delta[0, direction, channel],
                inputs.B[0, direction],
                inputs.C[0, direction],
                inputs.A[direction, channel],
                inputs.D[direction, channel],
            )
            blocks = torch.stack(
                [
                    full[s * cells : (s + 1) * cells, s * cells : (s + 1) * cells]
                    for s in range(segments)
                ]
            )
            expected.append(torch.fft.rfft(lag_profile(blocks).mean(0)).abs())
        got = axis_responses(inputs, axis)[0]  # the whole block (scan + D)
        assert got.shape == (1, channels, cells // 2 + 1)
        torch.testing.assert_close(got[0], torch.stack(expected), rtol=1e-12, atol=1e-12)


def test_skip_term_is_separated_from_the_scanned_part():
    """With B = 0 the scan adds nothing: the scanned part is 0 and the whole block is |D| at
    every frequency (all-pass), and the summary says so."""
    height, width, channels = 2, 6, 3
    generator = torch.Generator().manual_seed(5)
    D = torch.randn(4, channels, generator=generator, dtype=torch.float64)
    inputs = ScanInputs(
        u=torch.ones(1, 4, channels, height * width, dtype=torch.float64),
        delta=torch.full((1, 4, channels, height * width), 0.5, dtype=torch.float64),
        B=torch.zeros(1, 4, height * width, dtype=torch.float64),
        C=torch.ones(1, 4, height * width, dtype=torch.float64),
        A=-torch.ones(4, channels, dtype=torch.float64),
        D=D,
        height=height,
        width=width,
    )
    whole, scanned = axis_responses(inputs, "time")
    assert torch.all(scanned == 0)
    torch.testing.assert_close(whole[0], D[0].abs().view(channels, 1).expand(channels, 4))
    frequencies = np.fft.rfftfreq(width)
    curve = ResponseCurve(0, 0, "time", VARIANT_SCANNED, width, frequencies, np.zeros(4), 0.7)
    flat = ResponseCurve(0, 0, "time", VARIANT_SCAN, width, frequencies, np.full(4, 0.7), 0.7)
    summary = SpectralSummary(Path("o"), Path("o.csv"), Path("o.png"), 1, [curve, flat], [])
    text = summary.format_text()
    assert "time scanned nan, whole 1.000 (D share 100%)" in text
    assert "close to all-pass" in text


# ---------------------------------------------------------------------------------------------
# On the real DASS


def _ss2d_inputs_of(model, stage, index, x):
    captured = {}
    op = model.block(stage, index).op
    handle = op.register_forward_hook(
        lambda module, args, output: captured.update(h=args[0], out=output)
    )
    model(x)
    handle.remove()
    return op, captured["h"], captured["out"]


@pytest.mark.parametrize(("stage", "index"), [(0, 0), (2, 1)])
def test_mixing_matrix_reproduces_a_real_ss2d(tiny_dass, stage, index):
    from lungsrad.models.selective_scan.reference import selective_scan_reference

    model = tiny_dass().double().eval()
    x = torch.randn(1, 40, 32, dtype=torch.float64)
    with torch.no_grad():
        op, h, out = _ss2d_inputs_of(model, stage, index, x)
        inputs = ss2d_scan_inputs(op, h)
        channels = inputs.u.shape[2]
        ys = []
        for direction in range(4):
            matrix = mixing_matrix(
                inputs.delta[:, direction],
                inputs.B[:, direction].unsqueeze(1),
                inputs.C[:, direction].unsqueeze(1),
                inputs.A[direction].view(1, channels),
                inputs.D[direction].view(1, channels),
            )
            y = (matrix @ inputs.u[:, direction].unsqueeze(-1)).squeeze(-1)
            # The model's own scan op on the same operands.
            scanned = selective_scan_reference(
                inputs.u[:, direction],
                inputs.delta[:, direction],
                inputs.A[direction].view(channels, 1),
                inputs.B[:, direction].view(1, 1, 1, -1),
                inputs.C[:, direction].view(1, 1, 1, -1),
                inputs.D[direction],
                delta_softplus=False,
            )
            torch.testing.assert_close(y, scanned, rtol=0, atol=1e-9)
            ys.append(y)
        # Merged, normalised and projected as in ARCHITECTURE.md steps 7 to 9: the op's output.
        merged = cross_merge(torch.stack(ys, 1), inputs.height, inputs.width)
        normed = F.layer_norm(
            merged.permute(0, 2, 3, 1),
            (channels,),
            op.out_norm.weight,
            op.out_norm.bias,
            op.out_norm.eps,
        ).permute(0, 3, 1, 2)
        projected = torch.einsum("oc,bchw->bohw", op.out_proj.weight.reshape(channels, -1), normed)
    torch.testing.assert_close(projected, out, rtol=0, atol=1e-9)


def test_smoothed_curve_is_scan_curve_times_gaussian_response(tiny_dass):
    model = tiny_dass()
    regularization = config_from_dict(
        {
            "model": {"preset": "custom", "dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1]},
            "method": {"regularization": {"enabled": True, "stage": 1, "blocks": "all"}},
        }
    ).method.regularization
    curves = spectral_response_curves(model, torch.randn(1, 40, 32), regularization=regularization)
    by_key = {(c.stage, c.block, c.axis, c.variant): c for c in curves}
    for axis in ("time", "freq"):
        scan = by_key[(1, 0, axis, VARIANT_SCAN)]
        smoothed = by_key[(1, 0, axis, VARIANT_SMOOTHED)]
        gain = gaussian_frequency_response(3, 1.0, scan.num_cells).numpy()
        np.testing.assert_allclose(smoothed.response, scan.response * gain)
    assert (0, 0, "time", VARIANT_SMOOTHED) not in by_key
    plain = spectral_response_curves(model, torch.randn(1, 40, 32))
    assert {curve.variant for curve in plain} == {VARIANT_SCAN, VARIANT_SCANNED}
    assert len(plain) == 20
    for axis in ("time", "freq"):  # the Gaussian multiplies the scanned part too
        scanned = by_key[(1, 0, axis, VARIANT_SCANNED)]
        gain = gaussian_frequency_response(3, 1.0, scanned.num_cells).numpy()
        np.testing.assert_allclose(
            by_key[(1, 0, axis, VARIANT_SCANNED_SMOOTHED)].response, scanned.response * gain
        )
