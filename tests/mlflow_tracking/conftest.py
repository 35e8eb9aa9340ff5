"""Fixtures of the mlflow_tracking tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def fast_http_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow HTTP requests fail at once (no retries) and block at most 5 s."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
