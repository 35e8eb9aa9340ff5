"""Shared fixtures for the training tests: the features of the synthetic dataset (tests/conftest.py
`synthetic_root`) and a tiny-DASS config that trains in a fraction of a second per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lungsrad.config import ExperimentConfig, apply_overrides, config_from_dict
from lungsrad.data.features import FeatureSet, build_feature_set

# Short segments, few mel bins and a tiny DASS keep a training step in the tens of milliseconds.
TINY_OVERRIDES: dict[str, Any] = {
    "data.segment_seconds": 1.0,  # 98 frames
    "data.num_mel_bins": 32,
    "model.preset": "custom",
    "model.dims": [16, 32, 64, 128],
    "model.depths": [1, 1, 2, 1],
    "model.checkpoint": None,
    "model.scan_backend": "auto",
    "train.batch_size": 4,
    "train.eval_batch_size": 32,
    "train.learning_rate": 1e-3,
    "train.time_mask": 20,
    "train.freq_mask": 8,
    "train.device": "cpu",
    # One thread: tiny ops gain nothing from two, and on a busy machine (parallel test runs)
    # oversubscribed OpenMP threads make each step ~10x slower.
    "train.num_threads": 1,
    "train.num_epochs": 2,
    "train.max_steps_per_epoch": 2,
    "method.regularization.blocks": [0, 1],  # stage 2 of the tiny DASS has 2 blocks
    "method.patch_mix.projection_dim": 16,
}


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="session")
def make_tiny_config(synthetic_root: Path, feature_cache: Path):
    """Factory: `make_tiny_config(base=None, **dotted_overrides)` -> a tiny, fast config.

    `base` is a config whose method settings are kept (e.g. a Table 2 file); dotted keyword
    arguments use "__" for "." (train__num_epochs=1).
    """

    def make(base: ExperimentConfig | None = None, **overrides: Any) -> ExperimentConfig:
        config = base if base is not None else config_from_dict({})
        values = {
            **TINY_OVERRIDES,
            "data.root": str(synthetic_root),
            "data.cache_dir": str(feature_cache),
        }
        values.update({key.replace("__", "."): value for key, value in overrides.items()})
        return apply_overrides(config, values)

    return make


@pytest.fixture(scope="session")
def tiny_features(make_tiny_config) -> FeatureSet:
    config = make_tiny_config()
    return build_feature_set(config.data, config.data.root, show_progress=False)
