"""The one check of how the CLIs report bad input (STYLE.md): one line on stderr and exit 2.

Every test of a CLI's user error asserts through `assert_one_line_error`, so "one line" means the
same everywhere: stderr is exactly one non-empty line (no traceback, no blank or indented lines).
"""

from __future__ import annotations

import re
import subprocess

from lungsrad.errors import EXIT_BAD_INPUT

# What a CLI left: a finished subprocess, or an in-process `main`'s exit status with what it
# wrote, as (status, stderr) or (status, stdout, stderr).
CliResult = subprocess.CompletedProcess[str] | tuple[int, str] | tuple[int, str, str]


def assert_one_line_error(
    result: CliResult,
    *fragments: str,
    pattern: str | None = None,
    prefix: str | None = None,
) -> str:
    """Asserts the CLI exited 2 with exactly one line on stderr, and returns that line.

    Args:
        result: a `subprocess.run(..., capture_output=True, text=True)` result, or
            `(status, capsys.readouterr().err)` (a `(status, out, err)` triple also works).
        fragments: texts the line must contain.
        pattern: a regular expression the line must match (`re.search`).
        prefix: how the line must start (e.g. "lungsrad: error:").
    """
    if isinstance(result, subprocess.CompletedProcess):
        status, stderr, stdout = result.returncode, result.stderr, result.stdout
    else:
        status, stderr, stdout = result[0], result[-1], ""
    report = f"exit {status}\nstderr:\n{stderr}\nstdout:\n{stdout}"
    assert status == EXIT_BAD_INPUT, report
    assert stderr.splitlines() == [stderr.strip()] and stderr.strip(), f"not one line:\n{report}"
    line = stderr.strip()
    for fragment in fragments:
        assert fragment in line, report
    if pattern is not None:
        assert re.search(pattern, line), f"no match for {pattern!r}:\n{report}"
    if prefix is not None:
        assert line.startswith(prefix), report
    return line
