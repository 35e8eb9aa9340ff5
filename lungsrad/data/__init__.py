"""ICBHI 2017 data: the reader (icbhi, over the annotation files and the cycle waveforms),
features and their cache (features), evaluation splits (loaders) and their patient rules
(protocols: RespireNet's folds, the disjoint split), synthetic ICBHI-layout data (synthetic), the
dataset check (inspect) and the model-input export (export).

Names are imported lazily, so `lungsrad data synth` does not pay torch's import time.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Cycle": "annotations",
    "Recording": "annotations",
    "DataProblem": "annotations",
    "read_split_file": "annotations",
    "load_icbhi_index": "icbhi",
    "load_cycle_waveforms": "waveform",
    "audio_decode_count": "waveform",
    "FeatureSet": "features",
    "compute_fbank": "features",
    "build_feature_set": "features",
    "export_model_inputs": "export",
    "split_indices": "loaders",
    "read_fold_list": "protocols",
    "disjoint_moves": "protocols",
    "write_synthetic_dataset": "synthetic",
    "SyntheticSummary": "synthetic",
    "inspect_dataset": "inspect",
    "InspectReport": "inspect",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lungsrad.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lungsrad.data.{_EXPORTS[name]}"), name)
