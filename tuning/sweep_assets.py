"""Model weights a sweep ships to its trials through Ray's object store, as it ships the feature
set: the driver reads each checkpoint the space names once (tuning.preflight), puts the weights
there, and a trial builds its model from them without opening model.checkpoint's path, so worker
nodes need no copy of the file (nor of a `fetch:` asset).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray

from lungsrad.config import RANDOM_INIT_CHECKPOINT, ModelConfig
from lungsrad.models.build import InitialWeights

# What a trial's facts say about where its initial weights came from (logged as run params).
CHECKPOINT_SOURCE = "checkpoint_source"
CHECKPOINT_SHA256 = "checkpoint_sha256"
SOURCE_SHIPPED = "shipped"  # from the driver, through the object store
SOURCE_FILE = "file"  # read by the trial from model.checkpoint on its own node
SOURCE_NONE = "none"  # a random initialisation


def announce_weights(weights: Mapping[str, InitialWeights]) -> None:
    """One line per checkpoint the driver read: its name, file, SHA-256 and size."""
    for checkpoint, read in weights.items():
        print(
            f"checkpoint {checkpoint}: read once from {read.file} (sha256 {read.sha256}, "
            f"{read.size_bytes / 2**20:.1f} MiB); the trials get it through Ray's object store",
            flush=True,
        )


def ship_weights(weights: Mapping[str, InitialWeights]) -> dict[str, Any]:
    """The object refs of the weights, by model.checkpoint (needs a Ray connection)."""
    return {checkpoint: ray.put(read) for checkpoint, read in weights.items()}


def names_checkpoint(model: ModelConfig) -> bool:
    """Whether model.checkpoint names weights, decided without resolving or opening them."""
    value = model.checkpoint
    return value is not None and value.strip().lower() != RANDOM_INIT_CHECKPOINT


def trial_weights(
    shipped: Mapping[str, Any], model: ModelConfig
) -> tuple[InitialWeights | None, dict[str, str]]:
    """The shipped weights of the trial's model.checkpoint (None: none shipped, the trial reads
    its own file or starts at random) and the facts saying which weights it used."""
    if not names_checkpoint(model):
        return None, {CHECKPOINT_SOURCE: SOURCE_NONE}
    assert model.checkpoint is not None
    reference = shipped.get(model.checkpoint)
    if reference is None:
        return None, {CHECKPOINT_SOURCE: SOURCE_FILE}
    weights = ray.get(reference)
    return weights, {CHECKPOINT_SOURCE: SOURCE_SHIPPED, CHECKPOINT_SHA256: weights.sha256}
