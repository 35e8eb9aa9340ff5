"""Resume plumbing of a run: which checkpoint to continue from (its config checked), what it
restores besides module states (`RunProgress`), and the output folder put back in the state of
the resumed epoch (later epochs dropped, metrics.jsonl rewritten, best.pt restored).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungsrad.checkpoint_format import CheckpointError, read_lungsrad_checkpoint
from lungsrad.config import ExperimentConfig, save_config
from lungsrad.files import write_text_atomic
from lungsrad.training.checkpoint_files import (
    BEST_FILE,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    RESULT_FILE,
    check_resume_config,
    checkpoint_config,
    epoch_checkpoints,
    epoch_folder,
    find_resumable_checkpoint,
    read_resumable_checkpoint,
    remove_stale_temporary_files,
    save_atomic,
)
from lungsrad.training.result import json_line


@dataclass
class RunProgress:
    """What a checkpoint restores besides module states (a fresh run starts empty)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    train_seconds: float = 0.0
    start_epoch: int = 1


def locate_resume_checkpoint(
    config: ExperimentConfig,
    output_dir: Path,
    *,
    resume: bool,
    resume_from: str | os.PathLike[str] | None,
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from (None: fresh run), its config checked against `config`."""
    if resume_from is not None:
        path = Path(resume_from)
        payload = read_resumable_checkpoint(path)
    elif resume:
        found = find_resumable_checkpoint(output_dir)
        if found is None:
            return None
        path, payload = found
    else:
        if epoch_checkpoints(output_dir):
            raise FileExistsError(
                f"{output_dir} already holds checkpoints of a run; resume it or choose another "
                "output folder"
            )
        return None
    check_resume_config(checkpoint_config(payload, path=path), config, path=path)
    return path, payload


def drop_later_epochs(output_dir: Path, epoch: int) -> None:
    """Deletes the checkpoints of epochs after `epoch` (the one resumed from)."""
    # Checkpoints after the one resumed from belong to an abandoned history; a later resume
    # must not pick them up.
    for later, path in epoch_checkpoints(output_dir):
        if later > epoch:
            shutil.rmtree(path.parent, ignore_errors=True)


def restore_best_file(
    output_dir: Path, best: Mapping[str, Any] | None, *, resumed_elsewhere: bool
) -> None:
    """Makes best.pt hold the selected epoch's model again after a resume, when possible.

    `resumed_elsewhere`: the run continues from a checkpoint file outside output_dir (a Ray Tune
    restore); the selected epoch's checkpoint is then expected to be absent, so say nothing.
    """
    if best is None:
        return
    best_path = output_dir / BEST_FILE
    if best_path.is_file():
        try:
            if read_lungsrad_checkpoint(best_path).get("epoch") == best["epoch"]:
                return
        except CheckpointError:
            pass
    source = epoch_folder(output_dir, best["epoch"]) / CHECKPOINT_FILE
    try:
        payload = read_lungsrad_checkpoint(source)
    except (FileNotFoundError, CheckpointError):
        best_path.unlink(missing_ok=True)
        if resumed_elsewhere:
            return
        warnings.warn(
            f"best.pt for epoch {best['epoch']} cannot be restored in {output_dir} (its epoch "
            "checkpoint is not there); it is written again when a later epoch is selected",
            stacklevel=4,
        )
        return
    save_atomic(best_payload(payload), best_path)


def best_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What best.pt keeps of an epoch checkpoint: the model, its config and its metrics."""
    keys = ("format", "format_version", "lungsrad_version", "config", "epoch", "model")
    best = {key: payload[key] for key in keys}
    best["objective"] = payload.get("objective")
    best["metrics"] = payload["history"][-1] if payload.get("history") else {}
    best["data_fingerprint"] = payload.get("data_fingerprint")
    return best


def prepare_output_dir(
    config: ExperimentConfig,
    output_dir: Path,
    progress: RunProgress,
    *,
    is_resumed: bool,
    resumed_elsewhere: bool,
) -> None:
    """config.yaml, metrics.jsonl up to the resumed epoch, best.pt of the selected epoch, and no
    result.json until the run finishes."""
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary_files(output_dir)
    save_config(config, output_dir / CONFIG_FILE)
    # Rewritten from the checkpoint's history: a crash between a checkpoint and its metrics line
    # (or during an append) leaves neither a gap nor a duplicate.
    write_text_atomic(
        output_dir / METRICS_FILE, "".join(json_line(row) for row in progress.history)
    )
    if is_resumed:
        restore_best_file(output_dir, progress.best, resumed_elsewhere=resumed_elsewhere)
    (output_dir / RESULT_FILE).unlink(missing_ok=True)
