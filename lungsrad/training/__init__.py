"""Training and evaluation of Lung-SRAD runs: `run_experiment` (epochs, per-epoch evaluation,
atomic checkpoints, exact resume, callbacks) and `evaluate_checkpoint`.

Exports resolve lazily, so light submodules (checkpoint_files, specaugment) import without the
model.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointError": "lungsrad.checkpoint_format",
    "EvalReport": "lungsrad.training.evaluate",
    "evaluate_checkpoint": "lungsrad.training.evaluate",
    "NonFiniteLossError": "lungsrad.training.train_step",
    "RunInfo": "lungsrad.training.result",
    "RunResult": "lungsrad.training.result",
    "TrainingCallback": "lungsrad.training.run",
    "run_experiment": "lungsrad.training.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lungsrad.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
