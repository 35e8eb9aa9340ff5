"""User errors versus bugs at the CLIs: a UserError (or the OS error of a path the user gave)
is one line and exit 2; any other exception, a plain ValueError included, is a bug and keeps
its traceback. NaN and inf are refused for every float config field at load time."""

from __future__ import annotations

import argparse
import typing

import pytest

from lungsrad.cli import run_cli
from lungsrad.config import config_from_dict, config_paths
from lungsrad.errors import UserError
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
