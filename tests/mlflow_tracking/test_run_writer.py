"""RunTracker, the buffered run writer: no-duplicate continuation of a run, dropped invalid
updates, undelivered updates reported without credentials, and an outage of a real `mlflow
server` (cut and restored through a TCP relay) that loses nothing."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from mlflow_tracking.run_writer import RunTracker
from mlflow_tracking.server import LocalTrackingServer
from mlflow_tracking.store import TrackingTarget, make_client, open_experiment
from mlflow_tracking.tags import PARENT_RUN_TAG, TAG_TRIAL_ID
from mlflow_tracking.uri import sqlite_uri
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.usefixtures("fast_http_failures")


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
        # The retry interval outlasts the test on any machine: whether a flush comes "right
        # after a failure" is decided by the test's order of calls, never by how fast they run.
        tracker = RunTracker(
            target, run_name="trial", identity={TAG_TRIAL_ID: "t1"}, retry_interval_s=3600.0
        )
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
