"""The project's user-error exception, the one CLI funnel and the one "first line of an
exception" helper.

The CLIs (`lungsrad`, tuning/sweep.py, tuning/final.py, tuning/compare.py,
mlflow_tracking.report) run their body through `run_cli`: bad input prints its first line and
exits 2; any other exception is a bug and keeps its traceback (exit 1). Imports nothing local.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# The exit status of bad input (argparse's own for a bad flag).
EXIT_BAD_INPUT = 2


class UserError(ValueError):
    """Bad user input; the message names the file or key and says what to do.

    A ValueError, so code that validates by catching ValueError (e.g. trying each member of a
    Union type) keeps working; but a plain ValueError is not a user error.
    """


class BackendUnavailableError(ImportError):
    """An optional kernel backend the config asks for cannot load here (mamba-ssm not built,
    no usable Triton); the message names the backend, the install command or what to choose
    instead. An ImportError, so code probing for optional packages keeps working."""


# What the CLIs report as bad input: UserError, a backend the config names that cannot load,
# and the OS errors of a path the user gave.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    BackendUnavailableError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
)


def first_line(error: BaseException | str, *, empty: str | None = None) -> str:
    """The first line of an exception's message (or of a text), once the blank space around
    the whole message is dropped.

    Args:
        error: the exception (or its text).
        empty: what a message without text gives; by default the exception's type name (a
            text gives "").
    """
    lines = str(error).strip().splitlines()
    if lines:
        return lines[0]
    if empty is not None:
        return empty
    return type(error).__name__ if isinstance(error, BaseException) else ""


def report_user_error(
    error: BaseException, *, prefix: str = "error: ", redact: Callable[[str], str] | None = None
) -> int:
    """Prints `error`'s first line on stderr (`redact` hides credentials in it); returns 2."""
    message = first_line(error)
    if redact is not None:
        message = redact(message)
    print(f"{prefix}{message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_cli(
    body: Callable[[], int],
    *,
    prefix: str = "error: ",
    redact: Callable[[str], str] | None = None,
) -> int:
    """Runs a CLI's body and returns its exit status: a user error (USER_ERRORS) becomes one
    line on stderr (`prefix` + its first line, through `redact`) and exit status 2; any other
    exception is a bug and propagates with its traceback."""
    try:
        return body()
    except USER_ERRORS as error:
        return report_user_error(error, prefix=prefix, redact=redact)


@contextmanager
def disk_full_is_user_error(what: Callable[[], str]) -> Iterator[None]:
    """A full disk (ENOSPC) inside the block becomes one UserError line, "no space left on
    device " + what() (called then, so it can name progress made); other OS errors propagate."""
    try:
        yield
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise UserError(f"no space left on device {what()}") from None
        raise
