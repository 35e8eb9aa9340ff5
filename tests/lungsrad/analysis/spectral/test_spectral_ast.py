"""AST's side of Fig. 1: the attention-matrix Fourier response along time and frequency of the
patch grid, on attention matrices with known responses and on a tiny AST's real attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungsrad.analysis.spectral.ast import (
    VARIANT_ATTENTION,
    attention_axis_response,
    attention_response_curves,
    axis_blocks,
    circulant_lag_profile,
)
from lungsrad.analysis.spectral.curves import ResponseCurve
from lungsrad.models import AST

GRID = (4, 6)  # 4 frequency x 6 time patches
TOKENS = 2 + GRID[0] * GRID[1]


def curve(response: torch.Tensor, n: int) -> ResponseCurve:
    frequencies = np.fft.rfftfreq(n)
    return ResponseCurve(0, 0, "time", VARIANT_ATTENTION, n, frequencies, response.numpy())


def test_axis_blocks_pick_the_same_row_or_column():
    # attention[i, j] = 1000 * i + j names the pair of tokens.
    index = torch.arange(TOKENS, dtype=torch.float64)
    attention = (1000 * index.view(-1, 1) + index.view(1, -1)).view(1, 1, TOKENS, TOKENS)
    time = axis_blocks(attention, GRID, "time")
    assert time.shape == (1, 1, 4, 6, 6)
    f, t, s = 2, 1, 4  # query (2, 1), key (2, 4): tokens 2 + 2 * 6 + 1 and 2 + 2 * 6 + 4
    assert time[0, 0, f, t, s] == 1000 * (2 + f * 6 + t) + (2 + f * 6 + s)
    freq = axis_blocks(attention, GRID, "freq")
    assert freq.shape == (1, 1, 6, 4, 4)
    t, f, g = 5, 0, 3  # query (0, 5), key (3, 5)
    assert freq[0, 0, t, f, g] == 1000 * (2 + f * 6 + t) + (2 + g * 6 + t)


@pytest.mark.parametrize("axis", ["time", "freq"])
def test_uniform_attention_is_pure_dc(axis):
    attention = torch.full((2, 3, TOKENS, TOKENS), 1.0 / TOKENS)
    response = attention_axis_response(attention, GRID, axis)
    n = GRID[1] if axis == "time" else GRID[0]
    assert response.shape == (2, 3, n // 2 + 1)
    # Each row's block holds n entries of 1 / TOKENS: DC = n / TOKENS, nothing else.
    torch.testing.assert_close(
        response[..., 0], torch.full((2, 3), n / TOKENS, dtype=torch.float64)
    )
    assert response[..., 1:].abs().max() < 1e-12
    measured = curve(response[0, 0], n)
    assert measured.dc_share() == pytest.approx(1.0)
    assert measured.relative_db()[1:].max() == -40.0  # the floor


@pytest.mark.parametrize("axis", ["time", "freq"])
def test_identity_attention_is_all_pass(axis):
    attention = torch.eye(TOKENS).expand(1, 2, TOKENS, TOKENS)
    response = attention_axis_response(attention, GRID, axis)
    torch.testing.assert_close(response, torch.ones_like(response))
    n = GRID[1] if axis == "time" else GRID[0]
    measured = curve(response[0, 0], n)
    assert measured.dc_share() == pytest.approx(1.0 / n)
    np.testing.assert_allclose(measured.relative_db(), 0.0, atol=1e-12)


def test_neighbour_averaging_along_time_is_a_raised_cosine():
    # Each patch attends 1/2 to itself and 1/4 to each time neighbour (wrapping at the ends):
    # a circulant along time, response |1/2 + 1/2 cos(2 pi k / n)|; across frequency the
    # diagonal 1/2 only (no attention to other rows), a flat 1/2.
    freq, time = GRID
    attention = torch.zeros(TOKENS, TOKENS, dtype=torch.float64)
    for f in range(freq):
        for t in range(time):
            token = 2 + f * time + t
            attention[token, token] = 0.5
            attention[token, 2 + f * time + (t + 1) % time] += 0.25
            attention[token, 2 + f * time + (t - 1) % time] += 0.25
    attention = attention.view(1, 1, TOKENS, TOKENS)
    response = attention_axis_response(attention, GRID, "time")[0, 0]
    k = np.arange(time // 2 + 1)
    np.testing.assert_allclose(response.numpy(), np.abs(0.5 + 0.5 * np.cos(2 * np.pi * k / time)))
    across = attention_axis_response(attention, GRID, "freq")[0, 0]
    np.testing.assert_allclose(across.numpy(), 0.5)


def test_circulant_lag_profile_hand_case():
    matrix = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.float64)
    # lag 0: diagonal (1, 5, 9); lag 1: M[t, t-1 mod 3] = (3, 4, 8); lag 2: (2, 6, 7).
    torch.testing.assert_close(
        circulant_lag_profile(matrix), torch.tensor([5.0, 5.0, 5.0], dtype=torch.float64)
    )
    shifted = torch.roll(torch.eye(4, dtype=torch.float64), shifts=1, dims=1)  # M[t, t+1]
    torch.testing.assert_close(
        circulant_lag_profile(shifted), torch.tensor([0.0, 0, 0, 1], dtype=torch.float64)
    )


def test_curves_of_a_tiny_ast_use_its_real_attention():
    torch.manual_seed(0)
    model = AST(num_classes=4, embed_dim=16, depth=2, num_heads=2, input_frames=66, num_mel_bins=48)
    assert model.grid_shape == (4, 6)
    features = torch.randn(3, 66, 48, generator=torch.Generator().manual_seed(1))
    curves = attention_response_curves(model, features, batch_size=2)
    assert [(c.block, c.axis) for c in curves] == [
        (0, "time"),
        (0, "freq"),
        (1, "time"),
        (1, "freq"),
    ]
    # The same numbers from the model's own explicit-attention forward.
    with torch.no_grad():
        attentions = model.attention_matrices(features)
    for measured in curves:
        expected = attention_axis_response(attentions[measured.block], (4, 6), measured.axis)
        np.testing.assert_allclose(measured.response, expected.mean(1).mean(0).numpy(), rtol=1e-5)
        assert measured.num_cells == (6 if measured.axis == "time" else 4)
        # Softmax rows: the within-row block's DC is its share of the row's attention.
        assert 0 < measured.response[0] <= 1 + 1e-6
