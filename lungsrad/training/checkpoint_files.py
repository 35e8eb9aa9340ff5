"""The checkpoint files of a training run: atomic writes, per-epoch folders, finding the newest
valid one, pruning, and refusing to resume under a different config. The format itself (marker,
version, reader) is lungsrad/checkpoint_format.py.

Layout under a run's output folder: `checkpoints/epoch_0003/checkpoint.pt` (one folder per epoch,
holding only that file, so a sweep can copy it as-is) and `best.pt` (the selected epoch's model),
beside config.yaml, metrics.jsonl (one line per epoch) and result.json.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from lungsrad.checkpoint_format import CheckpointError, read_lungsrad_checkpoint
from lungsrad.config import ExperimentConfig, config_from_dict, flatten_config
from lungsrad.files import atomic_destination, fsync_directory

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINTS_FOLDER = "checkpoints"
BEST_FILE = "best.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
# Keys a resumable (per-epoch) checkpoint must hold; best.pt holds only format/config/model/...
RESUME_KEYS = (
    "format",
    "config",
    "model",
    "objective",
    "optimizer",
    "scheduler",
    "epoch",
    "history",
    "best",
)
# Config keys that may differ between a checkpoint and the run resuming it: where files live and
# how many CPU threads run, none of which changes what is computed.
RESUME_IGNORED_KEYS = frozenset(
    {"name", "data.root", "data.cache_dir", "model.checkpoint", "train.device", "train.num_threads"}
)

_EPOCH_FOLDER = re.compile(r"^epoch_(\d{4,})$")


def epoch_folder(output_dir: str | os.PathLike[str], epoch: int) -> Path:
    """The folder holding epoch `epoch`'s (1-based) checkpoint.pt."""
    return Path(output_dir) / CHECKPOINTS_FOLDER / f"epoch_{epoch:04d}"


def save_atomic(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """torch.save through a temporary file, fsync and os.replace: `path` is never torn.

    An interrupted write (exception, kill, full disk) leaves any previous file at `path` intact.
    """
    path = Path(path)
    with atomic_destination(path) as tmp_path:
        torch.save(dict(payload), tmp_path)
    fsync_directory(path.parent)


def read_resumable_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Like read_lungsrad_checkpoint, and checks that the file holds everything a resume needs."""
    payload = read_lungsrad_checkpoint(path)
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise CheckpointError(
            f"{path}: cannot resume from this checkpoint (missing {', '.join(missing)}); "
            "resume from checkpoints/epoch_*/checkpoint.pt, not best.pt"
        )
    return payload


def checkpoint_config(
    payload: Mapping[str, Any], *, path: str | os.PathLike[str]
) -> ExperimentConfig:
    """The ExperimentConfig embedded in a checkpoint (YAML text)."""
    try:
        return config_from_dict(yaml.safe_load(payload["config"]))
    except (ValueError, yaml.YAMLError) as error:
        raise CheckpointError(f"{path}: embedded config is not valid here ({error})") from None


def epoch_checkpoints(output_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(epoch, checkpoint.pt path) of every per-epoch folder that has the file, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_FOLDER
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        match = _EPOCH_FOLDER.match(folder.name)
        if match and (folder / CHECKPOINT_FILE).is_file():
            found.append((int(match.group(1)), folder / CHECKPOINT_FILE))
    return sorted(found)


def find_resumable_checkpoint(
    output_dir: str | os.PathLike[str],
) -> tuple[Path, dict[str, Any]] | None:
    """The newest per-epoch checkpoint that loads; damaged ones are skipped with a warning."""
    for _, path in reversed(epoch_checkpoints(output_dir)):
        try:
            return path, read_resumable_checkpoint(path)
        except CheckpointError as error:
            warnings.warn(f"skipping corrupt checkpoint: {error}", stacklevel=2)
    return None


def remove_stale_temporary_files(output_dir: str | os.PathLike[str]) -> None:
    """Deletes `.*.tmp` files an interrupted write left in the checkpoint folders."""
    root = Path(output_dir) / CHECKPOINTS_FOLDER
    if not root.is_dir():
        return
    for tmp in root.glob("**/.*.tmp"):
        tmp.unlink(missing_ok=True)


def prune_checkpoints(
    output_dir: str | os.PathLike[str], *, keep_last: int, keep_epochs: Iterable[int]
) -> None:
    """Deletes per-epoch folders except the newest `keep_last` and those in `keep_epochs`."""
    checkpoints = epoch_checkpoints(output_dir)
    protected = set(keep_epochs) | {epoch for epoch, _ in checkpoints[-keep_last:]}
    for epoch, path in checkpoints:
        if epoch not in protected:
            shutil.rmtree(path.parent, ignore_errors=True)


def config_differences(saved: ExperimentConfig, current: ExperimentConfig) -> list[str]:
    """'key: saved -> current' for every config key that differs, ignoring RESUME_IGNORED_KEYS."""
    before, after = flatten_config(saved), flatten_config(current)
    return [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if key not in RESUME_IGNORED_KEYS and before.get(key) != after.get(key)
    ]


def check_resume_config(
    saved: ExperimentConfig, current: ExperimentConfig, *, path: str | os.PathLike[str]
) -> None:
    """Raises CheckpointError when the run's config differs from the checkpoint's."""
    differences = config_differences(saved, current)
    if differences:
        raise CheckpointError(
            f"{path} was written with a different config ({'; '.join(differences)}); "
            "resume with the same config or start a new output folder"
        )
