"""Data a sweep prepares before its trials: the embedded default's synthetic dataset and the
feature set every trial shares through Ray's object store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lungsrad.data.features import SETTINGS_OUTSIDE_FINGERPRINT, build_feature_set
from lungsrad.data.synthetic import write_synthetic_dataset
from tuning.search_space import SearchSpace

SYNTHETIC_RECORDINGS = 24  # size of the synthetic dataset the embedded default generates
SYNTHETIC_SEED = 0


def ensure_synthetic_data(folder: Path) -> None:
    """Generates the embedded default's synthetic dataset on first use."""
    if (folder / "ICBHI_challenge_train_test.txt").is_file():
        return
    print(f"generating synthetic data ({SYNTHETIC_RECORDINGS} recordings) in {folder}", flush=True)
    write_synthetic_dataset(folder, num_recordings=SYNTHETIC_RECORDINGS, seed=SYNTHETIC_SEED)


def shared_feature_set(space: SearchSpace) -> Any:
    """The FeatureSet every trial shares, or None when trials need different features.

    Trials that sweep feature settings (data.*) or variants with different data sections build
    their own features (from the on-disk cache) instead.
    """
    split_only = {f"data.{name}" for name in SETTINGS_OUTSIDE_FINGERPRINT} - {
        "data.root",
        "data.split_file",
        "data.cache_dir",
    }
    swept = {path for p in space.parameters for path in p.config_paths}
    if any(path.startswith("data.") and path not in split_only for path in swept):
        print("trials sweep data settings: each trial builds its own features", flush=True)
        return None
    data_sections = {
        json.dumps(
            {k: v for k, v in vars(config.data).items() if f"data.{k}" not in split_only},
            sort_keys=True,
            default=str,
        )
        for config in space.variants.values()
    }
    if len(data_sections) > 1:
        print(
            "variants use different data settings: each trial builds its own features", flush=True
        )
        return None
    data = space.base_config.data
    started = time.perf_counter()
    feature_set = build_feature_set(data, data.root, show_progress=True)
    print(
        f"features: {len(feature_set)} cycles, fingerprint {feature_set.fingerprint[:12]} "
        f"({time.perf_counter() - started:.1f} s; shared with every trial through Ray's object "
        "store)",
        flush=True,
    )
    return feature_set
