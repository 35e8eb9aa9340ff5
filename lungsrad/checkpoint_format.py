"""The lungsrad checkpoint format, defined once: its marker, its version, and the reader that
checks both (`read_lungsrad_checkpoint`: a file written by `lungsrad train`). Training resume
(training/checkpoint_files.py), model loading (models/checkpoint.py) and trained-model loading
(training/trained_model.py) all read through here.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lungsrad.errors import UserError, first_line

CHECKPOINT_FORMAT = "lungsrad-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
# What a truncated or otherwise damaged torch.save file raises on load.
_LOAD_ERRORS = (
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


class CheckpointError(UserError):
    """A checkpoint file is unreadable, not a lungsrad checkpoint, or incompatible with the run."""


def is_lungsrad_checkpoint(payload: Any) -> bool:
    """True for a mapping that carries the lungsrad checkpoint marker (any version)."""
    return isinstance(payload, Mapping) and payload.get("format") == CHECKPOINT_FORMAT


def check_checkpoint_format(payload: Any, source: str) -> dict[str, Any]:
    """`payload` as a dict when it is a lungsrad checkpoint of this version.

    Raises:
        CheckpointError: not a lungsrad checkpoint, or written with another format version.
    """
    if not is_lungsrad_checkpoint(payload):
        raise CheckpointError(
            f"{source}: not a lungsrad training checkpoint (no 'format': '{CHECKPOINT_FORMAT}'); "
            "give a file written by `lungsrad train` (checkpoints/epoch_*/checkpoint.pt or best.pt)"
        )
    version = payload.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: checkpoint format version {version!r}, this lungsrad reads "
            f"{CHECKPOINT_FORMAT_VERSION}"
        )
    return dict(payload)


def read_lungsrad_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Loads a lungsrad checkpoint (on CPU) and checks its format and version.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable (truncated, corrupt), not a lungsrad checkpoint, or another
            format version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as error:
        reason = first_line(error)
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    return check_checkpoint_format(payload, str(path))
