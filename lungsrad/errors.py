"""The project's user-error exception: bad input (config, data, paths, search spaces, flags).

The CLIs (`lungsrad`, tuning/sweep.py, tuning/final.py, mlflow_tracking.report) print its first
line and exit 2; any other exception is a bug and keeps its traceback (exit 1). Imports nothing.
"""

from __future__ import annotations


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
