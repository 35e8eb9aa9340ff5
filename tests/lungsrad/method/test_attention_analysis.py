"""AST's side of Fig. 1: the attention-matrix Fourier response along time and frequency of the
patch grid on attention matrices with known responses, and `lungsrad spectral` on an AST
checkpoint and `--compare` with a DASS one."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from lungsrad.config import config_from_dict, dump_config
from lungsrad.method.attention_analysis import (
    VARIANT_ATTENTION,
    attention_axis_response,
    attention_response_curves,
    axis_blocks,
    circulant_lag_profile,
)
from lungsrad.method.spectral_analysis import (
    VARIANT_SCAN,
    ResponseCurve,
    run_spectral_analysis,
    run_spectral_comparison,
)
from lungsrad.models import AST, build_model

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


def _write_checkpoint(path, model, config):
    torch.save(
        {
            "format": "lungsrad-checkpoint",
            "format_version": 1,
            "config": dump_config(config),
            "model": model.state_dict(),
        },
        path,
    )


AST_VALUES = {
    "name": "tiny_ast",
    "data": {"segment_seconds": 1.0, "num_mel_bins": 32},  # 98 frames: a 2 x 9 grid
    "model": {"backbone": "ast", "ast_size": "tiny"},
    "method": {"regularization": {"enabled": True, "stage": 0, "blocks": [0]}},
}
DASS_VALUES = {
    "name": "tiny_dass",
    "data": {"segment_seconds": 1.0, "num_mel_bins": 32},
    "model": {"preset": "custom", "dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1]},
}


def test_spectral_on_an_ast_checkpoint(tmp_path):
    config = config_from_dict(AST_VALUES)
    torch.manual_seed(0)
    checkpoint = tmp_path / "ast.pt"
    _write_checkpoint(checkpoint, build_model(config), config)
    features = torch.randn(3, 98, 32, generator=torch.Generator().manual_seed(2))
    summary = run_spectral_analysis(
        checkpoint, data_root=None, output_dir=tmp_path / "out", num_examples=2, features=features
    )
    assert summary.backbone == "ast" and summary.num_examples == 2
    assert summary.figure_path.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(summary.csv_path.read_text().splitlines()))
    assert {(r["stage"], r["block"], r["axis"], r["variant"]) for r in rows} == {
        ("0", block, axis, VARIANT_ATTENTION) for block in ("0", "1") for axis in ("time", "freq")
    }
    assert {r["num_cells"] for r in rows if r["axis"] == "time"} == {"9"}
    assert all(math.isfinite(float(r["response"])) for r in rows)
    text = summary.format_text()
    assert "2 AST attention blocks" in text
    assert "block 0 (output smoothed): time" in text and "DC share" in text


def test_compare_draws_an_ast_and_a_dass_checkpoint(tmp_path, capsys):
    from lungsrad.cli import main
    from lungsrad.data.synthetic import write_synthetic_dataset

    data = tmp_path / "data"
    write_synthetic_dataset(data, num_recordings=4, seed=0)
    paths = []
    for values in (AST_VALUES, DASS_VALUES):
        values = {**values, "data": {**values["data"], "cache_dir": str(tmp_path / "cache")}}
        config = config_from_dict(values)
        torch.manual_seed(0)
        paths.append(tmp_path / f"{config.name}.pt")
        _write_checkpoint(paths[-1], build_model(config), config)
    out = tmp_path / "compare"
    argv = ["spectral", "--compare", *map(str, paths), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--examples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "AST (tiny_ast, tiny_ast.pt), 2 blocks: time" in printed
    assert "DASS (tiny_dass, tiny_dass.pt), 5 blocks: time" in printed
    assert (out / "spectral_compare.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((out / "spectral_compare.csv").read_text().splitlines()))
    models = {row["model"] for row in rows}
    assert models == {"AST (tiny_ast, tiny_ast.pt)", "DASS (tiny_dass, tiny_dass.pt)"}
    variants = {(row["model"][:4], row["variant"]) for row in rows}
    assert ("AST ", VARIANT_ATTENTION) in variants and ("DASS", VARIANT_SCAN) in variants

    with pytest.raises(SystemExit) as usage:  # argparse: one checkpoint is not a comparison
        main(["spectral", "--compare", str(paths[0]), "--out", str(out)])
    assert usage.value.code == 2
    assert "--compare: expected 2 arguments" in capsys.readouterr().err
    assert main([*argv, "--examples", "0"]) == 2
    assert "examples must be >= 1" in capsys.readouterr().err


def test_compare_figure_is_readable(tmp_path):
    """The figure is drawn at a size a page can hold, with both panels' curves (pixel check)."""
    from PIL import Image

    config = config_from_dict(AST_VALUES)
    dass_config = config_from_dict(DASS_VALUES)
    torch.manual_seed(0)
    paths = [tmp_path / "a.pt", tmp_path / "d.pt"]
    _write_checkpoint(paths[0], build_model(config), config)
    _write_checkpoint(paths[1], build_model(dass_config), dass_config)
    features = torch.randn(2, 98, 32, generator=torch.Generator().manual_seed(4))
    summary = run_spectral_comparison(
        paths, data_root=None, output_dir=tmp_path, num_examples=2, features=[features, features]
    )
    with Image.open(summary.figure_path) as image:
        width, height = image.size
        assert 1000 < width < 1800 and 700 < height < 1000
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # Left and right halves both hold coloured (curve) pixels, not only black text and grey grid.
    saturation = pixels.max(-1) - pixels.min(-1)
    assert (saturation[:, : width // 2] > 80).sum() > 200
    assert (saturation[:, width // 2 :] > 80).sum() > 200
