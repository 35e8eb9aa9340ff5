"""The lock file beside the assets (assets.lock.json): the SHA-256 and size each file had at its
first download, where no publisher pins one, so a later download that differs is refused."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.assets.registry import LOCK_FILE_NAME
from lungsrad.errors import UserError
from lungsrad.files import file_lock, write_text_atomic

LOCK_FORMAT = "lungsrad-assets-lock"


@dataclass(frozen=True)
class LockedFile:
    """What a file was at its first download."""

    sha256: str
    size: int
    source: str
    recorded_at: str


def lock_path(directory: Path) -> Path:
    return directory / LOCK_FILE_NAME


def read_lock(directory: Path) -> dict[str, LockedFile]:
    """Every recorded file (key: `<asset folder>/<file name>`); empty when there is no lock."""
    path = lock_path(directory)
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != LOCK_FORMAT:
            raise ValueError("not a lungsrad assets lock file")
        return {key: LockedFile(**entry) for key, entry in document["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(
            f"{path}: unreadable lock file ({error}); restore it from a backup or delete it "
            "(the digests it held are then recorded again at the next download)"
        ) from None


def record_files(directory: Path, entries: dict[str, tuple[str, int, str]]) -> None:
    """Adds {key: (sha256, size, source)} to the lock file (read, merge and atomic rewrite under
    a file lock, so concurrent fetches of different assets keep each other's entries)."""
    if not entries:
        return
    path = lock_path(directory)
    with file_lock(directory / f".{LOCK_FILE_NAME}.lock"):
        files: dict[str, Any] = {key: vars(entry) for key, entry in read_lock(directory).items()}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for key, (sha256, size, source) in entries.items():
            files[key] = {"sha256": sha256, "size": size, "source": source, "recorded_at": now}
        document = {"format": LOCK_FORMAT, "version": 1, "files": dict(sorted(files.items()))}
        write_text_atomic(path, json.dumps(document, indent=2) + "\n")
