"""Tracking URIs: credentials split off and hidden, SQLite paths made absolute, and a bad URI
named with what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_tracking.uri import (
    normalize_tracking_uri,
    redact_text,
    redact_uri,
    split_credentials,
    sqlite_uri,
)


def test_credentials_are_split_and_redacted() -> None:
    uri = "https://alice:s3cr%40t@mlflow.example.org:5000/prefix"
    clean, user, password = split_credentials(uri)
    assert clean == "https://mlflow.example.org:5000/prefix"
    assert (user, password) == ("alice", "s3cr@t")
    assert redact_uri(uri) == "https://***@mlflow.example.org:5000/prefix"
    message = f"API request to {uri}/api/2.0/runs failed (alice:s3cr%40t)"
    assert "s3cr" not in redact_text(message, uri) and "alice" not in redact_text(message, uri)
    assert redact_uri("postgresql://bob:pw@db/mlflow") == "postgresql://***@db/mlflow"
    assert split_credentials("sqlite:////tmp/x.db") == ("sqlite:////tmp/x.db", None, None)


def test_sqlite_uris_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_tracking_uri("sqlite:///runs/m.db") == f"sqlite:///{tmp_path}/runs/m.db"
    assert normalize_tracking_uri(sqlite_uri("a.db")) == f"sqlite:///{tmp_path}/a.db"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("htp://127.0.0.1:5000", r"unsupported scheme 'htp' \(did you mean http://\?\)"),
        ("sqlit:///x.db", r"unsupported scheme 'sqlit' \(did you mean sqlite://\?\)"),
        ("mlflow.db", r"unsupported scheme ''"),
        ("sqlite://", r"needs a database file"),
        ("http://", r"has no host"),
    ],
)
def test_bad_tracking_uri_is_named(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_tracking_uri(uri)
