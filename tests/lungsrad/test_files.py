"""lungsrad.files: atomic writes (the umask's mode, unique temporary names), the directory fsync,
figure saving (search-analysis plots included) and the file lock."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from lungsrad.files import (
    atomic_destination,
    file_lock,
    fsync_directory,
    save_figure,
    write_text_atomic,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_follow_the_umask(tmp_path) -> None:
    # mkstemp alone would leave them 0600 beside 0644 plots.
    previous = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "summary.md", "x\n")
        with atomic_destination(tmp_path / "plot.png") as tmp_file:
            tmp_file.write_bytes(b"png")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "summary.md") == 0o640
    assert _mode(tmp_path / "plot.png") == _mode(tmp_path / "plain.txt") == 0o640


def test_two_writers_of_one_path_never_share_a_temporary_file(tmp_path) -> None:
    target = tmp_path / "sub" / "table.md"
    with atomic_destination(target) as first, atomic_destination(target) as second:
        assert first != second and first.parent == second.parent == target.parent
        first.write_text("first\n")
        second.write_text("second\n")
    assert target.read_text() == "first\n"  # the last rename wins, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.md"]


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path) -> None:
    target = tmp_path / "result.json"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError), atomic_destination(target) as tmp_file:
        tmp_file.write_text("torn")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_fsync_directory_accepts_a_folder_and_ignores_a_missing_one(tmp_path) -> None:
    fsync_directory(tmp_path)
    fsync_directory(tmp_path / "missing")


def _figure(label: str):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 2))
    figure.add_subplot().set_title(label)
    return figure


def test_save_figure_writes_a_png_with_the_given_options(tmp_path) -> None:
    path = tmp_path / "plots" / "curve.png"
    save_figure(_figure("a"), path, dpi=50, bbox_inches="tight")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in path.parent.iterdir()] == ["curve.png"]


class _SlowFigure:
    """Writes its PNG in two halves and waits between them until every writer has begun, so
    the writers' files are open at the same time."""

    def __init__(self, together: threading.Barrier, label: bytes):
        self.together, self.label = together, label

    def savefig(self, path, *, format: str, **options) -> None:
        assert format == "png"
        with open(path, "wb") as stream:
            stream.write(PNG_SIGNATURE)
            self.together.wait(timeout=30)
            stream.write(self.label * 1000)


def test_search_analysis_figures_are_written_atomically_by_concurrent_writers(tmp_path) -> None:
    """Two reports saving one plot at once (they once shared the temporary `.NAME.tmp`, and the
    second rename failed): each write is whole, and no temporary file is left."""
    from mlflow_tracking import search_analysis

    path = tmp_path / "importance.png"
    together = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(label: bytes) -> None:
        try:
            search_analysis._save(_SlowFigure(together, label), path)
        except BaseException as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(error)

    writers = [threading.Thread(target=write, args=(label,)) for label in (b"a", b"b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert not errors and not any(writer.is_alive() for writer in writers)
    assert path.read_bytes() in (PNG_SIGNATURE + b"a" * 1000, PNG_SIGNATURE + b"b" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["importance.png"]


def test_file_lock_refuses_a_second_holder_without_blocking(tmp_path) -> None:
    import subprocess
    import sys

    lock = tmp_path / "driver.lock"
    probe = (
        "import sys\nfrom lungsrad.files import file_lock\n"
        "try:\n    with file_lock(sys.argv[1], blocking=False): print('got')\n"
        "except BlockingIOError: print('busy')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with file_lock(lock):
        held = subprocess.run(
            [sys.executable, "-c", probe, str(lock)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
    free = subprocess.run(
        [sys.executable, "-c", probe, str(lock)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert (held.stdout.strip(), free.stdout.strip()) == ("busy", "got")
