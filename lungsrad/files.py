"""Files every package writes: atomic writes (fsync, unique temporary names), the file lock
and figure saving. One implementation each; imports nothing local.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_destination(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside `path`; once the block succeeds the file is fsynced and
    renamed onto `path`, so readers never see a torn file. On failure it is removed and any
    previous `path` stays intact. Temporary names are `.NAME.*.tmp`, unique per writer, so
    concurrent writers of one path never share a temporary file (the last rename wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        # mkstemp creates the file 0600; the result gets the mode any new file would (umask).
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        with open(tmp_path, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    """The process umask (read from /proc where it can be, so the umask is never changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Makes a rename inside `directory` durable; a no-op where a directory cannot be opened
    or synced (not every platform can)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename (never a torn file)."""
    with atomic_destination(path) as tmp_path:
        tmp_path.write_text(text, encoding="utf-8")


def save_figure(figure: Any, path: str | os.PathLike[str], **options: Any) -> None:
    """Saves a matplotlib figure as PNG at `path`, atomically; `options` go to `savefig`
    (e.g. dpi, bbox_inches)."""
    with atomic_destination(path) as tmp_path:
        figure.savefig(tmp_path, format="png", **options)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[Path]:
    """Holds an exclusive POSIX lock on `path` (created if missing) for the block.

    The kernel releases it when the process dies (even by SIGKILL), and child processes do not
    inherit it. Without `blocking`, BlockingIOError is raised at once when another process
    holds the lock.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as stream:
        fcntl.lockf(stream.fileno(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield path
        finally:
            fcntl.lockf(stream.fileno(), fcntl.LOCK_UN)
