"""A run given `InitialWeights` (what a sweep driver ships to its trials) starts from them and
never opens model.checkpoint's path; `read_initial_weights` reads a file once, with its SHA-256."""

from __future__ import annotations

import hashlib

import pytest
import torch

from lungsrad.models import InitialWeights, build_model, read_initial_weights
from lungsrad.training.run import run_experiment
from lungsrad.training.setup import build_training_parts

CPU = torch.device("cpu")


def _pretrained(config) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)  # weights no train.seed would give
    return {key: value.clone() for key, value in build_model(config).state_dict().items()}


def test_run_starts_from_shipped_weights_without_opening_the_path(
    make_tiny_config, tiny_features, tmp_path
):
    # The checkpoint lives "on the driver only": on this machine the path does not exist, so
    # any attempt to open, stat-and-load or resolve it as a file fails.
    missing = tmp_path / "driver_only" / "dass.pt"
    config = make_tiny_config(model__checkpoint=str(missing), train__num_epochs=1)
    state = _pretrained(make_tiny_config())
    shipped = InitialWeights(
        checkpoint=str(missing), file=str(missing), sha256="0" * 64, state=state
    )

    with pytest.raises(FileNotFoundError, match="model.checkpoint not found"):
        build_training_parts(config, CPU)  # the control: without them, the path is needed

    parts = build_training_parts(config, CPU, initial_weights=shipped)
    model_state = parts.model.state_dict()
    assert all(torch.equal(model_state[key], value) for key, value in state.items())

    result = run_experiment(
        config,
        output_dir=tmp_path / "run",
        feature_set=tiny_features,
        show_progress=False,
        device="cpu",
        initial_weights=shipped,
    )
    assert [row["epoch"] for row in result.history] == [1]
    assert not missing.parent.exists()

    other = make_tiny_config(model__checkpoint=str(tmp_path / "another.pt"))
    with pytest.raises(ValueError, match="initial weights of"):
        build_model(other, initial_weights=shipped)


def test_read_initial_weights_reads_the_file_with_its_digest(make_tiny_config, tmp_path):
    state = _pretrained(make_tiny_config())
    path = tmp_path / "weights.pt"
    torch.save({f"module.v.{key}": value for key, value in state.items()}, path)
    config = make_tiny_config(model__checkpoint=str(path))

    read = read_initial_weights(config.model)
    assert read is not None and read.checkpoint == str(path) and read.file == str(path)
    assert read.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    built = build_model(config, initial_weights=read).state_dict()
    assert all(torch.equal(built[key], value) for key, value in state.items())
    assert read_initial_weights(make_tiny_config(model__checkpoint="none").model) is None
