"""Commands that only read MLflow (report, compare) never create a store, and say where they
looked when what they read is not there (real SQLite stores)."""

from __future__ import annotations

import pytest

from mlflow_tracking import report
from mlflow_tracking.store import make_client
from mlflow_tracking.uri import sqlite_uri
from tests.cli_errors import assert_one_line_error
from tuning import compare

pytestmark = pytest.mark.mlflow


@pytest.mark.parametrize(
    "command",
    [
        lambda uri: report.main(["--experiment", "x", "--tracking-uri", uri, "--no-log"]),
        lambda uri: compare.main(["--parent-run-id", "abc", "--tracking-uri", uri, "--no-log"]),
    ],
    ids=["report", "compare"],
)
def test_a_missing_store_is_named_and_not_created(tmp_path, capsys, command) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    uri = sqlite_uri(folder / "mlflow.db")
    assert_one_line_error(
        (command(uri), capsys.readouterr().err),
        f"no MLflow store at {folder / 'mlflow.db'}",
        "--tracking-uri",
    )
    assert list(folder.iterdir()) == []  # no empty store, no lock file


def test_an_unknown_parent_run_names_the_store(tmp_path, capsys) -> None:
    uri = sqlite_uri(tmp_path / "mlflow.db")
    make_client(uri).create_experiment("exists")
    status = compare.main(["--parent-run-id", "0123abcd", "--tracking-uri", uri, "--no-log"])
    assert_one_line_error(
        (status, capsys.readouterr().err),
        "parent run 0123abcd not found in the MLflow store",
        str(tmp_path / "mlflow.db"),
    )
