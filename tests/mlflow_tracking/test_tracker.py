"""MLflow tracking: URI checks and credential hiding, experiments on SQLite, RunTracker's
no-duplicate continuation of a run, dropped invalid updates, the undelivered-updates file, and
an outage of a real `mlflow server` (cut and restored through a TCP relay) that loses nothing."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from mlflow_tracking.server import LocalTrackingServer
from mlflow_tracking.tracker import (
    EXPERIMENT_KIND_TAG,
    PARENT_RUN_TAG,
    TAG_TRIAL_ID,
    TRAINING_EXPERIMENT_KIND,
    RunTracker,
    TrackingTarget,
    make_client,
    normalize_tracking_uri,
    open_experiment,
    redact_text,
    redact_uri,
    split_credentials,
    sqlite_uri,
)
from tests.tcp_relay import TcpRelay


@pytest.fixture(autouse=True)
def fast_http_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


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


def test_tracking_target_never_shows_credentials() -> None:
    target = TrackingTarget(uri="http://u:pw@127.0.0.1:1", experiment_name="e", experiment_id="1")
    assert "pw" not in repr(target) and target.display_uri == "http://***@127.0.0.1:1"


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


@pytest.mark.mlflow
def test_a_continued_run_is_reused_and_stored_steps_are_not_repeated(tmp_path: Path) -> None:
    target = open_experiment(sqlite_uri(tmp_path / "m.db"), "exp", artifact_root=tmp_path / "art")
    parent = RunTracker(target, run_name="parent")
    assert parent.flush()
    first = RunTracker(
        target,
        run_name="trial",
        parent_run_id=parent.run_id,
        identity={TAG_TRIAL_ID: "abc_00001"},
        dedupe_key="epoch",
    )
    first.log_params({"a.b": 1, "c": [1, 2], "d": None})
    for epoch in (1, 2):
        first.log_metrics({"epoch": epoch, "score": 10.0 * epoch, "text": "skipped"}, step=epoch)
    assert first.flush() and not first.reused_existing
    # The trial process dies here; its retry continues the same run from epoch 2.
    second = RunTracker(
        target,
        run_name="trial (retry)",
        parent_run_id=parent.run_id,
        identity={TAG_TRIAL_ID: "abc_00001"},
        dedupe_key="epoch",
    )
    second.log_params({"a.b": 1, "c": [1, 2], "d": None})
    for epoch in (2, 3):
        second.log_metrics({"epoch": epoch, "score": 10.0 * epoch}, step=epoch)
    assert second.finish("FINISHED")
    assert second.reused_existing and second.run_id == first.run_id

    client = make_client(target.uri)
    runs = client.search_runs([target.experiment_id], f"tags.`{TAG_TRIAL_ID}` = 'abc_00001'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags[PARENT_RUN_TAG] == parent.run_id
    assert run.data.params == {"a.b": "1", "c": "[1, 2]", "d": "null"}
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "score"))
    assert steps == [1, 2, 3]


@pytest.mark.mlflow
def test_an_update_mlflow_rejects_is_dropped_and_the_rest_arrives(tmp_path: Path) -> None:
    target = open_experiment(sqlite_uri(tmp_path / "m.db"), "exp", artifact_root=tmp_path / "art")
    tracker = RunTracker(target, run_name="run")
    tracker.log_params({"lr": 0.1})
    assert tracker.flush()
    tracker.log_params({"lr": 0.2})  # params are immutable in MLflow
    tracker.log_metrics({"score": 1.0}, step=1)
    with pytest.warns(UserWarning, match="MLflow rejected a params update"):
        assert tracker.flush()
    run = make_client(target.uri).get_run(tracker.run_id)
    assert run.data.params["lr"] == "0.1" and run.data.metrics["score"] == 1.0


def test_undelivered_updates_are_reported_without_credentials() -> None:
    down = TcpRelay()  # a port whose server drops every connection
    uri = f"http://user:hunter2@127.0.0.1:{down.port}"
    target = TrackingTarget(uri=uri, experiment_name="e", experiment_id="1")
    tracker = RunTracker(target, run_name="lost")
    tracker.log_metrics({"score": 3.0}, step=7)
    with (
        down,
        pytest.warns(UserWarning, match="2 updates of run lost were not delivered") as caught,
    ):
        assert not tracker.finish("FINISHED", timeout_s=0.5)
    # The wait (0.5 s) is shorter than the first retry interval (2 s): one more try at the
    # deadline at most, never a retry loop.
    assert 1 <= down.dropped <= 2, down.dropped
    assert all("hunter2" not in str(w.message) for w in caught)
    assert tracker.pending == 2  # still queued: a later flush can deliver them


@pytest.mark.mlflow
@pytest.mark.slow
def test_metrics_logged_during_a_server_outage_arrive_when_it_returns(tmp_path: Path) -> None:
    with LocalTrackingServer(tmp_path / "server") as server:
        relay = TcpRelay(server.port)
        target = open_experiment(relay.uri, "outage")
        tracker = RunTracker(target, run_name="trial", identity={TAG_TRIAL_ID: "t1"})
        tracker.log_metrics({"epoch": 1, "score": 1.0}, step=1)
        assert tracker.flush()

        relay.cut()
        for epoch in (2, 3):
            tracker.log_metrics({"epoch": epoch, "score": float(epoch)}, step=epoch)
            tried = relay.dropped
            assert not tracker.flush(force=True)  # training goes on; the updates wait
            assert relay.dropped == tried + 1, "one try per flush, no retry loop inside it"
        assert tracker.pending == 2 and tracker.last_error
        tried = relay.dropped
        assert not tracker.flush()  # right after a failure: no network attempt at all
        assert relay.dropped == tried

        relay.restore()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert tracker.finish("FINISHED")
        client = make_client(server.uri)
        run = client.get_run(tracker.run_id)
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(tracker.run_id, "score")
        assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 2.0), (3, 3.0)]
        relay.close()


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
