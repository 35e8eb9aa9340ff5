"""`lungsrad train` / `lungsrad evaluate` from the command line: one synthetic epoch as a real
subprocess, evaluation of its checkpoint, and bad inputs that must exit 2 with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lungsrad.cli import main
from lungsrad.data.synthetic import write_synthetic_dataset
from tests.cli_errors import assert_one_line_error

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY_CONFIG = {
    "name": "cli_smoke",
    "data": {"segment_seconds": 1.0, "num_mel_bins": 32},
    "model": {"preset": "custom", "dims": [16, 32, 64, 128], "depths": [1, 1, 2, 1]},
    "method": {
        "regularization": {"enabled": True, "stage": 2, "blocks": [0, 1]},
        "patch_mix": {"mode": "dual", "projection_dim": 16},
    },
    "train": {
        "num_epochs": 1,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "max_steps_per_epoch": 2,
        "time_mask": 20,
        "freq_mask": 8,
        "device": "cpu",
        "num_threads": 1,
    },
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_train")
    write_synthetic_dataset(root / "data", num_recordings=8, seed=1)
    return root


def _write_config(path: Path, values: dict, cache_dir: Path) -> Path:
    values = {**values, "data": {**values.get("data", {}), "cache_dir": str(cache_dir)}}
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(workspace) -> Path:
    """`python -m lungsrad train` for one synthetic epoch, in a subprocess."""
    config = _write_config(workspace / "tiny.yaml", TINY_CONFIG, workspace / "cache")
    out = workspace / "run"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lungsrad",
            "train",
            "--config",
            str(config),
            "--data",
            str(workspace / "data"),
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "ICBHI Score" in completed.stdout
    return out


def test_train_one_synthetic_epoch_writes_its_outputs(trained):
    for name in ("config.yaml", "metrics.jsonl", "result.json", "best.pt"):
        assert (trained / name).is_file(), name
    assert (trained / "checkpoints" / "epoch_0001" / "checkpoint.pt").is_file()
    assert len((trained / "metrics.jsonl").read_text().splitlines()) == 1


def test_evaluate_a_trained_checkpoint(trained, workspace, capsys, tmp_path):
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(trained / "best.pt"),
            "--data",
            str(workspace / "data"),
            "--out",
            str(tmp_path),
        ]
    )
    output = capsys.readouterr().out
    assert code == 0
    assert "ICBHI Score" in output and "confusion matrix" in output
    assert (tmp_path / "confusion_test.png").is_file()


def _train(config: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--config", str(config), "--data", str(data), "--out", str(out), *extra])


def test_unknown_config_key(workspace, tmp_path, capsys):
    values = {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "learning_rat": 0.1}}
    config = _write_config(tmp_path / "bad.yaml", values, workspace / "cache")
    code = _train(config, workspace / "data", tmp_path / "out")
    assert_one_line_error(
        (code, capsys.readouterr().err),
        "bad.yaml",
        "unknown config key 'train.learning_rat'",
        prefix="lungsrad: error:",
    )


def test_wrong_type(workspace, tmp_path, capsys):
    values = {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], "batch_size": "sixteen"}}
    config = _write_config(tmp_path / "bad.yaml", values, workspace / "cache")
    code = _train(config, workspace / "data", tmp_path / "out")
    assert_one_line_error(
        (code, capsys.readouterr().err), "train.batch_size", "integer", prefix="lungsrad: error:"
    )


def test_unknown_override_path(workspace, tmp_path, capsys):
    config = _write_config(tmp_path / "ok.yaml", TINY_CONFIG, workspace / "cache")
    code = _train(config, workspace / "data", tmp_path / "out", "--set", "train.sed=3")
    assert_one_line_error((code, capsys.readouterr().err), "train.sed", prefix="lungsrad: error:")


def test_missing_config_file(workspace, tmp_path, capsys):
    code = _train(tmp_path / "nowhere.yaml", workspace / "data", tmp_path / "out")
    assert_one_line_error(
        (code, capsys.readouterr().err),
        "config file not found",
        "nowhere.yaml",
        prefix="lungsrad: error:",
    )


def test_missing_data_folder(workspace, tmp_path, capsys):
    config = _write_config(tmp_path / "ok.yaml", TINY_CONFIG, workspace / "cache")
    code = _train(config, tmp_path / "no_such_data", tmp_path / "out")
    assert_one_line_error(
        (code, capsys.readouterr().err), "no_such_data", prefix="lungsrad: error:"
    )
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_dass_checkpoint_with_wrong_shapes(workspace, tmp_path, capsys):
    from lungsrad.models import DASS

    other = DASS(dims=(8, 16, 32, 64), depths=(1, 1, 2, 1))
    weights = tmp_path / "wrong_shapes.pth"
    torch.save({f"module.v.{k}": v for k, v in other.state_dict().items()}, weights)
    values = {**TINY_CONFIG, "model": {**TINY_CONFIG["model"], "checkpoint": str(weights)}}
    config = _write_config(tmp_path / "ok.yaml", values, workspace / "cache")
    code = _train(config, workspace / "data", tmp_path / "out")
    assert_one_line_error(
        (code, capsys.readouterr().err), "wrong_shapes.pth", prefix="lungsrad: error:"
    )
