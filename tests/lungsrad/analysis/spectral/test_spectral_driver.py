"""`lungsrad spectral` end to end: a DASS checkpoint (CSV, figure, summary), an AST one, and
`--compare` with both; from the API and from the command line."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from lungsrad.analysis.spectral.ast import VARIANT_ATTENTION
from lungsrad.analysis.spectral.dass import VARIANT_SCAN, VARIANT_SMOOTHED
from lungsrad.analysis.spectral.driver import run_spectral_analysis, run_spectral_comparison
from lungsrad.config import config_from_dict, dump_config
from lungsrad.models import build_model


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


def test_pipeline_writes_csv_and_png(tiny_dass, tmp_path):
    model = tiny_dass()
    config = config_from_dict(
        {
            "name": "tiny",
            "model": {"preset": "custom", "dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1]},
            "method": {
                "regularization": {
                    "enabled": True,
                    "stage": 2,
                    "blocks": [0, 1],
                    "kernel_size": 3,
                    "sigma": 1.0,
                }
            },
        }
    )
    checkpoint = tmp_path / "checkpoint.pt"
    _write_checkpoint(checkpoint, model, config)
    torch.manual_seed(0)
    features = torch.randn(3, 48, 32)
    summary = run_spectral_analysis(
        checkpoint,
        data_root=None,
        output_dir=tmp_path / "spectral",
        num_examples=2,
        features=features,
    )
    assert summary.num_examples == 2
    assert summary.figure_path.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(summary.csv_path.read_text().splitlines()))
    blocks = {(row["stage"], row["block"]) for row in rows}
    assert blocks == {("0", "0"), ("1", "0"), ("2", "0"), ("2", "1"), ("3", "0")}
    smoothed = {(row["stage"], row["block"]) for row in rows if row["variant"] == VARIANT_SMOOTHED}
    assert smoothed == {("2", "0"), ("2", "1")}
    # Grids of a 48 x 32 input: stage 0 is 8 (freq) x 12 (time) cells.
    stage0_time = [row for row in rows if row["stage"] == "0" and row["axis"] == "time"]
    assert {row["num_cells"] for row in stage0_time} == {"12"}
    assert len(stage0_time) == 2 * 7  # whole block and scanned part, 7 bins each
    assert all(math.isfinite(float(row["response"])) for row in rows)
    text = summary.format_text()
    assert "stage 2 block 1: time" in text and "stage 3 block 0: time" in text
    assert text.count("after the Gaussian") == 4  # 2 smoothed blocks x 2 axes


@pytest.mark.slow
def test_cli_spectral_on_a_synthetic_dataset(tiny_dass, tmp_path, capsys):
    from lungsrad.cli import main
    from lungsrad.data.synthetic import write_synthetic_dataset

    data_root = tmp_path / "data"
    write_synthetic_dataset(data_root, num_recordings=4, seed=0)
    config = config_from_dict(
        {
            "model": {"preset": "custom", "dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1]},
            "data": {
                "segment_seconds": 1.0,
                "num_mel_bins": 32,
                "cache_dir": str(tmp_path / "cache"),
            },
            "method": {"regularization": {"enabled": True, "stage": 2, "blocks": [1]}},
        }
    )
    checkpoint = tmp_path / "checkpoint.pt"
    _write_checkpoint(checkpoint, tiny_dass(), config)
    out = tmp_path / "spectral"
    args = ["spectral", "--checkpoint", str(checkpoint), "--data", str(data_root)]
    assert main([*args, "--out", str(out), "--examples", "2"]) == 0
    assert "stage 2 block 1" in capsys.readouterr().out
    assert (out / "spectral_response.csv").is_file() and (out / "spectral_response.png").is_file()

    assert main([*args, "--out", str(out), "--examples", "0"]) == 2
    assert "examples must be >= 1" in capsys.readouterr().err


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
