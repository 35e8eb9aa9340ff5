"""The MLflow store: a tracking target never shows credentials, an unreachable server is named
after one try, and experiments on SQLite keep their artifacts under the root and are training
experiments."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_tracking.store import TrackingTarget, make_client, open_experiment
from mlflow_tracking.tags import EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND
from mlflow_tracking.uri import sqlite_uri
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.usefixtures("fast_http_failures")


def test_tracking_target_never_shows_credentials() -> None:
    target = TrackingTarget(uri="http://u:pw@127.0.0.1:1", experiment_name="e", experiment_id="1")
    assert "pw" not in repr(target) and target.display_uri == "http://***@127.0.0.1:1"


def test_unreachable_server_is_named_without_credentials() -> None:
    with TcpRelay() as down:  # a port whose server drops every connection
        uri = f"http://user:hunter2@127.0.0.1:{down.port}"
        with pytest.raises(ValueError, match=r"is not reachable") as raised:
            open_experiment(uri, "x")
        assert down.dropped == 1, "named after one try, without retrying"
    message = str(raised.value)
    assert f"'http://***@127.0.0.1:{down.port}'" in message
    assert "hunter2" not in message and "\n" not in message


@pytest.mark.mlflow
def test_experiment_on_sqlite_keeps_artifacts_under_the_root(tmp_path: Path) -> None:
    target = open_experiment(sqlite_uri(tmp_path / "m.db"), "exp", artifact_root=tmp_path / "art")
    experiment = target.client().get_experiment(target.experiment_id)
    assert experiment.artifact_location == (tmp_path / "art").as_uri()
    again = open_experiment(sqlite_uri(tmp_path / "m.db"), "exp")
    assert again.experiment_id == target.experiment_id


def test_experiments_are_training_experiments(tmp_path: Path) -> None:
    """The MLflow UI opens a training experiment on its runs table: new experiments carry the
    kind tag, and an existing experiment without it gets it (one with a kind keeps its own)."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    target = open_experiment(uri, "new-experiment")
    client = make_client(uri)
    assert client.get_experiment(target.experiment_id).tags[EXPERIMENT_KIND_TAG] == (
        TRAINING_EXPERIMENT_KIND
    )
    old_id = client.create_experiment("made-by-hand")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old_id).tags
    open_experiment(uri, "made-by-hand")
    assert make_client(uri).get_experiment(old_id).tags[EXPERIMENT_KIND_TAG] == (
        TRAINING_EXPERIMENT_KIND
    )
    genai_id = client.create_experiment("genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    open_experiment(uri, "genai")
    assert client.get_experiment(genai_id).tags[EXPERIMENT_KIND_TAG] == "genai_development"
