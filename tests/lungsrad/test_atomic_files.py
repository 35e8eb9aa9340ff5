"""Files written atomically get the mode of any new file under the process umask (mkstemp alone
would leave them 0600 beside 0644 plots)."""

from __future__ import annotations

import os
import stat

from lungsrad.config import atomic_destination, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_follow_the_umask(tmp_path) -> None:
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
