"""`lungsrad data features`: the arrays it writes (from the feature cache, resized, in order),
--split-file and --set, and bad input refused in one line with exit 2 (never overwriting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from lungsrad.cli import main
from lungsrad.config import DataConfig
from lungsrad.data.export import cycle_indices, export_model_inputs
from lungsrad.data.features import build_feature_set, resize_frames
from lungsrad.data.icbhi import audio_decode_count
from lungsrad.data.layout import SPLIT_FILE_NAME
from tests.cli_errors import assert_one_line_error

TRAIN, TEST = "101_1b1_Al_sc_Meditron", "102_1b1_Ar_sc_Meditron"


def _config(tmp_path: Path, **data: object) -> Path:
    path = tmp_path / "config.yaml"
    data = {"cache_dir": str(tmp_path / "cache"), "segment_seconds": 2.0, **data}
    path.write_text(yaml.safe_dump({"config_version": 2, "data": data}), encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["data", "features", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cycle_indices_count_within_each_recording() -> None:
    assert cycle_indices(("a", "a", "a", "b", "c", "c")).tolist() == [0, 1, 2, 0, 0, 1]


def test_export_writes_the_cached_features_resized_in_order(
    small_dataset: Path, tmp_path: Path
) -> None:
    config = DataConfig(
        root=str(small_dataset),
        cache_dir=str(tmp_path / "cache"),
        segment_seconds=2.0,
        normalization="per_example",
        model_frames=256,
    )
    cached = build_feature_set(config, show_progress=False)
    before = audio_decode_count()
    export = export_model_inputs(config, tmp_path / "out.npz", show_progress=False)
    assert audio_decode_count() == before  # read from the cache, not recomputed
    with np.load(tmp_path / "out.npz", allow_pickle=False) as stored:
        assert sorted(stored.files) == ["cycles", "features", "labels", "recordings", "splits"]
        features = stored["features"]
        assert features.dtype == np.float32 and features.shape == (4, 256, 128)
        expected = resize_frames(cached.features.float(), 256).numpy()
        np.testing.assert_array_equal(features, expected)
        assert stored["labels"].tolist() == [0, 1, 2, 3]
        assert stored["recordings"].tolist() == [TRAIN, TRAIN, TEST, TEST]
        assert stored["cycles"].tolist() == [0, 1, 0, 1]
        assert stored["splits"].tolist() == ["train", "train", "test", "test"]
    assert (export.num_cycles, export.num_frames, export.num_mel_bins) == (4, 256, 128)
    assert export.fingerprint == cached.fingerprint
    assert not list(tmp_path.glob(".out.npz.*"))  # no temporary file left behind


def test_streamed_batches_make_one_array(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lungsrad.data import export as export_module

    config = DataConfig(root=str(small_dataset), cache_dir=str(tmp_path / "c"), segment_seconds=2.0)
    export_model_inputs(config, tmp_path / "whole.npz", show_progress=False)
    monkeypatch.setattr(export_module, "EXPORT_BATCH_CYCLES", 3)  # batches of 3 and 1 cycles
    export_model_inputs(config, tmp_path / "batched.npz", show_progress=False)
    with np.load(tmp_path / "whole.npz") as whole, np.load(tmp_path / "batched.npz") as batched:
        np.testing.assert_array_equal(whole["features"], batched["features"])
        cached = build_feature_set(config, show_progress=False).features.float().numpy()
        np.testing.assert_array_equal(whole["features"], cached)  # model_frames null: no resize


def test_cli_split_file_set_and_force(
    small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = tmp_path / "swapped_split.txt"
    split.write_text(f"{TRAIN}\ttest\n{TEST}\ttrain\n", encoding="utf-8")
    (small_dataset / SPLIT_FILE_NAME).unlink()
    out = tmp_path / "features.npz"
    args = [str(small_dataset), "--config", str(_config(tmp_path)), "--out", str(out)]
    assert_one_line_error(_run(capsys, *args), "split file not found", prefix="lungsrad: error: ")
    args += ["--split-file", str(split), "--set", "data.model_frames=64"]
    status, printed, err = _run(capsys, *args)
    assert status == 0, err
    assert f"wrote {out}: features (4, 64, 128) float32 from 2 recordings" in printed
    with np.load(out) as stored:
        assert stored["splits"].tolist() == ["test", "test", "train", "train"]
    before = out.read_bytes()
    assert_one_line_error(
        _run(capsys, *args[:-2], "--set", "data.model_frames=32"),
        "--force",
        prefix="lungsrad: error: ",
    )
    assert out.read_bytes() == before  # refused: never overwritten silently
    status, _, err = _run(capsys, *args[:-2], "--set", "data.model_frames=32", "--force")
    assert status == 0, err
    with np.load(out) as stored:
        assert stored["features"].shape == (4, 32, 128)


def test_cli_bad_input_is_one_line_and_exit_2(
    small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path))
    out = str(tmp_path / "f.npz")
    cases = [
        ([str(tmp_path / "nowhere"), "--config", config, "--out", out], "dataset folder not found"),
        ([str(small_dataset), "--config", str(tmp_path / "no.yaml"), "--out", out], "no.yaml"),
        ([str(small_dataset), "--config", config, "--out", str(tmp_path / "f.pt")], ".npz file"),
        ([str(small_dataset), "--config", config, "--out", str(tmp_path)], "must be a .npz"),
    ]
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    cases += [
        ([str(small_dataset), "--config", config, "--out", str(tmp_path / "folder.npz")], "folder"),
        (
            [str(small_dataset), "--config", config, "--out", str(tmp_path / "file" / "f.npz")],
            "is a file, not a folder",
        ),
        (
            [str(small_dataset), "--config", config, "--out", out, "--set", "data.fade=linear"],
            "data.fade",
        ),
    ]
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("config_version: 2\ndata:\n  normalization: zscore\n", encoding="utf-8")
    cases.append(
        ([str(small_dataset), "--config", str(bad_config), "--out", out], "data.normalization")
    )
    for args, pattern in cases:
        assert_one_line_error(_run(capsys, *args), pattern, prefix="lungsrad: error: ")
    assert not Path(out).exists()
