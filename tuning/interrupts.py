"""SIGINT / SIGTERM of a sweep driver: the first signal stops Tune the way Ctrl-C does (trials
stopped, experiment state saved) so that the driver can mark its runs KILLED and print the
`--resume` command; a signal outside Tune, or a second one, stops the driver at once. Ray-free.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Ray Tune always installs its "stop the experiment, save its state" handler on SIGUSR1 while
# `Tuner.fit` runs (and on SIGINT unless TUNE_DISABLE_SIGINT_HANDLER=1, which the driver sets so
# that it sees which signal came).
TUNE_STOP_SIGNAL = signal.SIGUSR1


class SweepInterrupted(KeyboardInterrupt):
    """The driver was stopped by a signal; the CLIs exit 128 + the signal number."""

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(detail or signal.Signals(signum).name)
        self.signum = signum
        self.detail = detail
        self.sweep_id: str | None = None  # set once the sweep can be resumed

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


@dataclass
class _Watch:
    signum: int | None = None  # the first signal received
    in_tune: bool = False  # Tuner.fit is running: hand the first signal to Tune
    active: bool = False  # inside catch_interrupts


_WATCH = _Watch()


def _handle(signum: int, frame: Any) -> None:
    first = _WATCH.signum is None
    if first:
        _WATCH.signum = signum
    tune_stop = signal.getsignal(TUNE_STOP_SIGNAL)
    if first and _WATCH.in_tune and callable(tune_stop):
        print(
            f"{signal.Signals(signum).name} received: stopping the trials and saving the sweep "
            "state (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        tune_stop(signum, frame)
        return
    raise SweepInterrupted(_WATCH.signum or signum)


@contextlib.contextmanager
def catch_interrupts() -> Iterator[None]:
    """Turns SIGINT and SIGTERM into SweepInterrupted for the block (main thread only; elsewhere
    the process keeps its handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in HANDLED_SIGNALS}
    _WATCH.signum, _WATCH.in_tune = None, False
    _WATCH.active = True
    reinstall_handlers()
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _WATCH.signum, _WATCH.in_tune, _WATCH.active = None, False, False


def reinstall_handlers() -> None:
    """Puts the handlers back inside `catch_interrupts` (a no-op outside it): `ray.init` installs
    its own SIGTERM handler in the driver, which aborts the process."""
    if _WATCH.active and threading.current_thread() is threading.main_thread():
        for number in HANDLED_SIGNALS:
            signal.signal(number, _handle)


@contextlib.contextmanager
def tune_running() -> Iterator[None]:
    """Marks the block as `Tuner.fit`: the first signal asks Tune to stop instead of raising."""
    _WATCH.in_tune = True
    try:
        yield
    finally:
        _WATCH.in_tune = False


def received_signal() -> int | None:
    """The signal that interrupted the sweep (None: none came)."""
    return _WATCH.signum


def resume_command(script: str, argv: Sequence[str], sweep_id: str) -> str:
    """The command line that continues sweep `sweep_id`: `argv` without any --resume, plus
    --resume SWEEP_ID."""
    kept: list[str] = []
    skip_value = False
    for item in argv:
        if skip_value:
            skip_value = False
            if not item.startswith("-"):
                continue
        if item == "--resume":
            skip_value = True
            continue
        if item.startswith("--resume="):
            continue
        kept.append(item)
    return shlex.join(["python", script, *kept, "--resume", sweep_id])
