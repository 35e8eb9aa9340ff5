"""`load_trained_model`: the one way a trained checkpoint becomes a model (evaluation and the
spectral analysis both use it), and its errors."""

from __future__ import annotations

import pytest
import torch

from lungsrad.config import config_from_dict, dump_config
from lungsrad.models import build_model
from lungsrad.training.trained_model import load_trained_model

TINY = {
    "name": "tiny",
    "model": {
        "preset": "custom",
        "dims": [16, 32, 64, 128],
        "depths": [1, 1, 2, 1],
        "checkpoint": "/nowhere/DASS_small.pth",  # the run's init file, absent here
        "scan_backend": "reference",
    },
    "method": {"regularization": {"enabled": True, "stage": 2, "blocks": [1]}},
    "train": {"device": "cpu"},
}


def _write(path, payload):
    torch.save({"format": "lungsrad-checkpoint", "format_version": 1, **payload}, path)


def test_rebuilds_the_trained_weights_with_the_run_hooks(tmp_path):
    config = config_from_dict({**TINY, "model": {**TINY["model"], "checkpoint": None}})
    torch.manual_seed(0)
    trained_state = build_model(config).state_dict()
    saved = config_from_dict(TINY)
    _write(tmp_path / "best.pt", {"config": dump_config(saved), "model": trained_state, "epoch": 3})
    torch.manual_seed(1)  # another initialisation: only the stored weights can match
    trained = load_trained_model(tmp_path / "best.pt")
    assert trained.epoch == 3 and trained.device == torch.device("cpu")
    assert trained.config.model.checkpoint is None  # never read: the weights replace it
    assert trained.config.model.scan_backend == "reference"
    assert not trained.model.training
    for key, value in trained.model.state_dict().items():
        torch.testing.assert_close(value, trained_state[key], rtol=0, atol=0)
    assert len(trained.model.block(2, 1)._forward_hooks) == 1  # regularization as trained
    assert not trained.model.block(2, 0)._forward_hooks
    other = load_trained_model(tmp_path / "best.pt", scan_backend="auto")
    assert other.config.model.scan_backend == "auto"


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_trained_model(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_trained_model(tmp_path / "garbage.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a lungsrad training checkpoint"):
        load_trained_model(tmp_path / "plain.pt")
    _write(tmp_path / "c.pt", {"config": "model: {preset: huge}", "model": {}})
    with pytest.raises(ValueError, match="embedded config is not valid"):
        load_trained_model(tmp_path / "c.pt")
    _write(tmp_path / "n.pt", {"config": dump_config(config_from_dict(TINY))})
    with pytest.raises(ValueError, match="no model stored"):
        load_trained_model(tmp_path / "n.pt")
