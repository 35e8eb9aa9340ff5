"""User errors versus bugs at the CLIs: a UserError (or the OS error of a path the user gave)
is one line and exit 2; any other exception, a plain ValueError included, is a bug and keeps
its traceback. NaN and inf are refused for every float config field at load time."""

from __future__ import annotations

import argparse
import typing

import pytest

from lungsrad import errors
from lungsrad.cli import run_cli
from lungsrad.config import config_from_dict, config_paths
from lungsrad.errors import UserError, first_line
from tuning.sweep import run_command


def _raise(error: BaseException):
    def handler(*_: object) -> int:
        raise error

    return handler


def test_user_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(_raise(UserError("bad key 'x'\nmore")), argparse.Namespace()) == 2
    assert capsys.readouterr().err == "lungsrad: error: bad key 'x'\n"
    assert run_command(_raise(FileNotFoundError("no such folder: /d")), None) == 2
    assert capsys.readouterr().err == "error: no such folder: /d\n"


def test_other_exceptions_are_bugs_with_their_traceback() -> None:
    with pytest.raises(ValueError, match="internal"):
        run_cli(_raise(ValueError("internal")), argparse.Namespace())
    with pytest.raises(ValueError, match="internal"):
        run_command(_raise(ValueError("internal")), None)


class _Silent(Exception):
    def __str__(self) -> str:
        return ""


@pytest.mark.parametrize(
    ("error", "empty", "line"),
    [
        (UserError("bad key 'x'\nmore"), None, "bad key 'x'"),
        (RuntimeError("\n  spaced out\nsecond"), None, "spaced out"),
        (_Silent(), None, "_Silent"),
        (_Silent(), "", ""),
        (_Silent(), "error", "error"),
        ("text\nmore", None, "text"),
        ("   ", None, ""),
    ],
)
def test_first_line(error: BaseException | str, empty: str | None, line: str) -> None:
    assert first_line(error, empty=empty) == line


def test_the_funnel_redacts_and_prefixes(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise NotADirectoryError("sqlite:///u:secret@x is not a folder\ntrace")

    assert errors.run_cli(body, redact=lambda text: text.replace("secret", "***")) == 2
    assert capsys.readouterr().err == "error: sqlite:///u:***@x is not a folder\n"
    assert errors.run_cli(lambda: 0, prefix="x: ") == 0
    assert errors.EXIT_BAD_INPUT == 2


def _float_paths() -> list[str]:
    paths = []
    for path, annotation in config_paths().items():
        if float in (annotation, *typing.get_args(annotation)):
            paths.append(path)
    return paths


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan"])
def test_every_float_field_refuses_nan_and_inf(value: object) -> None:
    paths = _float_paths()
    assert len(paths) >= 10, paths  # the check covers the config's float fields
    for path in paths:
        section, *rest = path.split(".")
        document: dict = {section: {}}
        node = document[section]
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = value
        with pytest.raises(UserError, match=f"'{path}' must be a finite number"):
            config_from_dict(document)
