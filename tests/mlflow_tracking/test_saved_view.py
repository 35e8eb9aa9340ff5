"""The saved-view state (the format the MLflow 3.17 UI reads), its compression, and a store that
refuses the experiment tag (real MLflow, SQLite)."""

from __future__ import annotations

import json

import pytest

from mlflow_tracking.saved_view import (
    SHARED_VIEW_TAG_PREFIX,
    SweepView,
    decode_state,
    encode_state,
    runs_page_link,
    saved_view_value,
    swept_param_keys,
    view_state,
    write_saved_view,
)
from mlflow_tracking.store import make_client
from mlflow_tracking.uri import sqlite_uri

VIEW = SweepView(
    name="smoke 1a2b: best first",
    metric="best/selection/icbhi_score",
    maximize=True,
    other_metrics=("report/icbhi_score", "report/specificity"),
    params=swept_param_keys(["method.patch_mix.temperature", "method.patch_mix.alpha"]),
    tags=("lungsrad.trial_status",),
    search_filter="tags.`lungsrad.sweep_id` = '1a2b'",
)


def test_state_sorts_best_first_and_selects_the_answer_columns() -> None:
    state = view_state(VIEW)
    assert state["orderByKey"] == "metrics.`best/selection/icbhi_score`"
    assert state["orderByAsc"] is False
    # The score, then the swept parameters, then the other metrics (issue 25: the parameters
    # were off-screen to the right behind every report metric).
    assert state["selectedColumns"] == [
        "metrics.`best/selection/icbhi_score`",
        "params.`method.patch_mix.temperature`",
        "params.`method.patch_mix.alpha`",
        "params.`train.seed`",
        "metrics.`report/icbhi_score`",
        "metrics.`report/specificity`",
        "tags.`lungsrad.trial_status`",
    ]
    assert state["columnOrder"][0] == "attributes.`Run Name`"
    assert state["isAccordionReordered"] is True and state["runListHidden"] is True
    (section,) = state["compareRunSections"]
    (chart,) = state["compareRunCharts"]
    assert section["columns"] == 1 and chart["metricSectionId"] == section["uuid"]
    assert chart["type"] == "PARALLEL"
    assert chart["selectedParams"] == ["method.patch_mix.temperature", "method.patch_mix.alpha"]
    assert chart["selectedMetrics"] == ["best/selection/icbhi_score"]
    assert state["searchFilter"] == VIEW.search_filter


def test_a_metric_to_minimise_sorts_ascending() -> None:
    state = view_state(SweepView(name="v", metric="best/val/loss", maximize=False))
    assert state["orderByAsc"] is True


def test_a_long_state_is_compressed_and_reads_back() -> None:
    many = SweepView(
        name="wide",
        metric="best/m",
        maximize=True,
        params=tuple(f"method.parameter_{index:03d}.value" for index in range(150)),
    )
    encoded = encode_state(view_state(many))
    assert encoded.startswith("deflate;")
    assert decode_state(encoded) == view_state(many)
    assert len(saved_view_value(many)) < 5000  # MLflow's limit of an experiment tag value
    short = encode_state(view_state(VIEW))
    assert decode_state(short) == view_state(VIEW) and not short.startswith("deflate;")


def test_tag_value_holds_name_times_and_state() -> None:
    value = json.loads(saved_view_value(VIEW, now_ms=1_700_000_000_000))
    assert value["name"] == VIEW.name
    assert value["createdAt"] == value["updatedAt"] == 1_700_000_000_000
    assert decode_state(value["state"]) == view_state(VIEW)


def test_link_opens_the_runs_route_in_the_training_view() -> None:
    assert runs_page_link("http://host:5000/", "7", "lungsrad-1a2b") == (
        "http://host:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&viewStateShareKey=lungsrad-1a2b"
    )
    assert runs_page_link("http://host:5000", "7").endswith("/runs?workflowType=machine_learning")


@pytest.mark.mlflow
def test_view_is_stored_as_an_experiment_tag(tmp_path) -> None:
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = make_client(uri)
    experiment_id = client.create_experiment("views")
    assert write_saved_view(client, experiment_id, "lungsrad-1a2b", VIEW, uri)
    tags = client.get_experiment(experiment_id).tags
    stored = json.loads(tags[SHARED_VIEW_TAG_PREFIX + "lungsrad-1a2b"])
    assert decode_state(stored["state"]) == view_state(VIEW)


@pytest.mark.mlflow
def test_a_store_that_refuses_the_tag_costs_one_warning(tmp_path) -> None:
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = make_client(uri)
    experiment_id = client.create_experiment("deleted")
    client.delete_experiment(experiment_id)  # MLflow refuses tags on a deleted experiment
    with pytest.warns(UserWarning, match="did not store the saved view 'k'.*without it") as caught:
        assert not write_saved_view(client, experiment_id, "k", VIEW, uri)
    assert len(caught) == 1
