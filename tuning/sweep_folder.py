"""The sweep folder: a Tune experiment folder plus our sweep.json (sweep id, parent run id,
experiment), found again by --resume, and held by its running driver through a file lock.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lungsrad.errors import UserError
from lungsrad.files import file_lock, write_text_atomic
from mlflow_tracking.store import TrackingTarget
from tuning.search_space import SearchSpace
from tuning.settings import DriverSettings

STATE_FILE = "sweep.json"
DRIVER_LOCK_FILE = ".driver.lock"  # in the sweep folder, held by its running driver


@dataclass(frozen=True)
class SweepFolder:
    """A Tune experiment folder plus our sweep.json (sweep id, parent run id, experiment)."""

    path: Path
    sweep_id: str  # recorded in sweep.json and on the parent run; --resume SWEEP_ID finds it
    parent_run_id: str | None
    is_new: bool


def read_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def recorded_sweep_id(folder: Path) -> str:
    # Folders of older versions record no id: their name stands for it.
    return str(read_state(folder).get("sweep_id") or folder.name)


def locate_sweep_folder(space: SearchSpace, settings: DriverSettings) -> SweepFolder:
    """A new folder named by time and a random sweep id (unique even for sweeps started in the
    same second), or with --resume the one sweep of this name (and id, when given)."""
    if not settings.resume:
        sweep_id = secrets.token_hex(4)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = settings.storage_path / f"{space.name}_{stamp}_{sweep_id}"
        return SweepFolder(path=path, sweep_id=sweep_id, parent_run_id=None, is_new=True)
    folder = _resumed_folder(space, settings)
    state = read_state(folder)
    if state.get("experiment") != settings.experiment:
        raise UserError(
            f"--resume: {folder} logged to MLflow experiment '{state.get('experiment')}', not "
            f"'{settings.experiment}'; pass --experiment {state.get('experiment')}"
        )
    return SweepFolder(
        path=folder,
        sweep_id=recorded_sweep_id(folder),
        parent_run_id=state.get("parent_run_id"),
        is_new=False,
    )


def _resumed_folder(space: SearchSpace, settings: DriverSettings) -> Path:
    """The folder --resume [SWEEP_ID] names; several matches are refused, never guessed."""
    # By the recorded name: the glob alone would also match a space named "<name>_more".
    candidates = sorted(
        p
        for p in settings.storage_path.glob(f"{space.name}_*")
        if read_state(p).get("sweep") == space.name
    )
    wanted = settings.resume_id
    if wanted:
        candidates = [p for p in candidates if wanted in (recorded_sweep_id(p), p.name)]
    if not candidates:
        which = f" with id '{wanted}'" if wanted else ""
        raise FileNotFoundError(
            f"--resume: no earlier sweep '{space.name}'{which} under {settings.storage_path}; "
            "run without --resume to start one (or pass the --storage-path it used)"
        )
    if len(candidates) > 1:
        listed = ", ".join(f"{recorded_sweep_id(p)} ({p.name})" for p in candidates)
        raise UserError(
            f"--resume: {len(candidates)} sweeps '{space.name}' under {settings.storage_path}: "
            f"{listed}; choose one with --resume SWEEP_ID"
        )
    return candidates[0]


@contextlib.contextmanager
def driver_lock(folder: SweepFolder) -> Iterator[None]:
    """Held by the driver of the sweep while it runs: a second driver (--resume of a sweep that
    is still running) is refused in one line. The kernel drops it when the driver dies. A new
    folder that never got its sweep.json (the sweep stopped before its parent run) is removed."""
    folder.path.mkdir(parents=True, exist_ok=not folder.is_new)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(folder.path / DRIVER_LOCK_FILE, blocking=False))
        except BlockingIOError:
            raise UserError(
                f"--resume: sweep {folder.sweep_id} ({folder.path}) is still running (its "
                "driver holds the folder's lock); wait until it ends or stop it first"
            ) from None
        try:
            yield
        finally:
            if folder.is_new and not (folder.path / STATE_FILE).exists():
                shutil.rmtree(folder.path, ignore_errors=True)


def write_state(
    folder: SweepFolder, space: SearchSpace, target: TrackingTarget, **extra: Any
) -> None:
    write_text_atomic(
        folder.path / STATE_FILE,
        json.dumps(
            {
                "sweep": space.name,
                "sweep_id": folder.sweep_id,
                "search_space": str(space.path),
                "experiment": target.experiment_name,
                "experiment_id": target.experiment_id,
                "tracking_uri": target.display_uri,
                **extra,
            },
            indent=1,
        )
        + "\n",
    )
