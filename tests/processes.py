"""Holding a process still while a test acts: the test, not the machine's speed, decides at
which moment the process is looked at or killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (T: stopped), None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


class Held:
    """Holds processes still (SIGSTOP) while a test acts, and lets them go on (SIGCONT) when
    the block ends: what the test looks at cannot change under it, however fast the machine.
    A held process keeps its sockets, so Ray and the sweep driver wait for it."""

    def __init__(self, *pids: int):
        self.pids = pids

    def __enter__(self) -> Held:
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)
        for pid in self.pids:  # the signal is asynchronous: wait until the kernel stopped it
            while _process_state(pid) not in ("T", "t", "Z", None):
                time.sleep(0.001)
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:  # killed while held
                continue
