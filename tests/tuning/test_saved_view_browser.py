"""What a person sees: a smoke sweep logs to a real `mlflow server`, prints the link to its saved
view, and headless Chromium (Debian's `chromium`; `.ci/run` installs it) opens that link. The
rendered runs page shows the saved view: the sweep metric, then the swept parameters, then the
report columns, sorted best first, the sweep's parent row and its trials; the chart view draws
the parallel-coordinates chart full width with whole axis names once MLflow's assistant panel is
closed as docs/mlflow-ui.md says; a final's view starts with the mean Score, Sp and Se."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from mlflow.entities import Metric, Param, RunTag

from lungsrad.metrics import (
    REPORT_PREFIX,
    REPORT_SCORE,
    REPORT_SENSITIVITY,
    REPORT_SPECIFICITY,
    metrics_degenerate_note,
    prediction_metrics,
)
from mlflow_tracking.saved_view import SHARED_VIEW_TAG_PREFIX, decode_state, sweep_share_key
from mlflow_tracking.store import make_client
from mlflow_tracking.tags import (
    NOT_DEGENERATE,
    PARENT_RUN_TAG,
    TAG_DEGENERATE,
    TAG_SWEEP_ID,
    TAG_TRIAL_STATUS,
)
from tests.browser import Browser, find_chromium
from tuning.cost import (
    COST_DEVICE_HOURS,
    COST_DEVICE_SECONDS,
    COST_EPOCHS_MAX,
    COST_EPOCHS_RUN,
    COST_HOURS_UNTIL_BEST,
)
from tuning.driver import run_sweep
from tuning.presentation import parent_run_name, print_outcome, sweep_view
from tuning.result_keys import best_metric_name
from tuning.results import mean_metric_name
from tuning.search_space import load_search_space
from tuning.settings import DriverSettings

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow, pytest.mark.browser]

TEMPERATURE = "method.patch_mix.temperature"
ALPHA = "method.patch_mix.alpha"
# A limit for a page that never renders (a broken link), not a guess at how fast it renders.
PAGE_LIMIT_S = 180.0

_ROW_ORDER = (
    "Array.from(document.querySelectorAll('[role=row][row-id]'))"
    ".map(r => r.getAttribute('row-index') + ' ' + r.getAttribute('row-id'))"
)
_HEADERS = "Array.from(document.querySelectorAll('[role=columnheader]')).map(e => e.innerText)"
# Column headers left to right: [aria-colindex, name] of the headers the grid has drawn.
_HEADER_ORDER = (
    "Array.from(document.querySelectorAll('[role=columnheader][aria-colindex]'))"
    ".map(e => [Number(e.getAttribute('aria-colindex')), e.innerText.trim()])"
)
# MLflow 3.17 opens its assistant panel on a browser's first page of a server it reaches as
# localhost or 127.0.0.1; docs/mlflow-ui.md says to close it with its "Close" (X) button.
_ASSISTANT_OPEN = "document.body.innerText.includes('Ask questions about your experiments')"
_CLOSE_ASSISTANT = (
    "(() => { const close = document.querySelector("
    "'[data-component-id=\"mlflow.assistant.chat_panel.close\"]');"
    " if (close) close.click(); return Boolean(close); })()"
)
_AXIS_NAMES = (
    "Array.from(document.querySelectorAll('.parcoords text.label')).map(e => e.textContent)"
)


def _index(row: str) -> int:
    return int(row.split(" ", 1)[0])


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium; .ci/run does)")
    return executable


@pytest.fixture(scope="module")
def viewed_sweep(local_ray, write_space, mlflow_server, tmp_path_factory, chromium):
    folder = tmp_path_factory.mktemp("saved_view")
    space = load_search_space(
        write_space(
            folder,
            "viewed",
            parameters={TEMPERATURE: {"loguniform": [0.03, 0.3]}, ALPHA: {"choice": [0.5, 2.0]}},
            search="tpe",
            num_samples=2,
            max_concurrent_trials=2,
            seeds=[0],
            resources={"cpu": 1},
        )
    )
    settings = DriverSettings(
        output_root=folder / "runs",
        storage_path=folder / "runs" / "ray_results",
        tracking_uri=mlflow_server.uri,
        experiment="test-saved-view",
        ray_address=None,
    )
    return space, run_sweep(space, settings)


def test_the_sweep_stores_its_view_and_prints_the_link_last(viewed_sweep, capsys) -> None:
    space, outcome = viewed_sweep
    print_outcome(outcome)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    experiment_id = outcome.tracking.experiment_id
    assert outcome.view_key is not None
    assert last.endswith(
        f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={outcome.view_key}"
    )
    experiment = outcome.tracking.client().get_experiment(experiment_id)
    stored = json.loads(experiment.tags[SHARED_VIEW_TAG_PREFIX + outcome.view_key])
    state = decode_state(stored["state"])
    metric = f"metrics.`{best_metric_name(space.metric)}`"
    assert state["orderByKey"] == metric and state["orderByAsc"] is False
    assert {metric, f"params.`{TEMPERATURE}`", f"params.`{ALPHA}`", "params.`train.seed`"} <= set(
        state["selectedColumns"]
    )
    (chart,) = state["compareRunCharts"]
    assert chart["type"] == "PARALLEL" and set(chart["selectedParams"]) == {TEMPERATURE, ALPHA}


def test_every_trial_and_the_sweep_say_what_they_cost(viewed_sweep) -> None:
    _, outcome = viewed_sweep
    client = outcome.tracking.client()
    runs = client.search_runs([outcome.tracking.experiment_id])
    children = [run for run in runs if run.info.run_id != outcome.parent_run_id]
    assert len(children) == 2
    for run in children:
        assert run.data.metrics[COST_DEVICE_SECONDS] > 0
        assert run.data.metrics[COST_EPOCHS_RUN] == run.data.metrics[COST_EPOCHS_MAX] == 2
        assert run.data.tags[TAG_TRIAL_STATUS] == "done"
        # The degenerate flag on every trial run, the one rule applied to its logged metrics.
        expected = metrics_degenerate_note(run.data.metrics) or NOT_DEGENERATE
        assert run.data.tags[TAG_DEGENERATE] == expected
        assert run.data.tags[TAG_SWEEP_ID] == outcome.folder.name.rsplit("_", 1)[-1]
    assert client.get_run(outcome.parent_run_id).data.tags[TAG_DEGENERATE] == (
        outcome.best.degenerate or NOT_DEGENERATE
    )
    parent = client.get_run(outcome.parent_run_id).data.metrics
    total = sum(run.data.metrics[COST_DEVICE_SECONDS] for run in children) / 3600.0
    assert parent[COST_DEVICE_HOURS] == pytest.approx(total)
    assert 0 < parent[COST_HOURS_UNTIL_BEST] <= parent[COST_DEVICE_HOURS] + 1e-12
    assert "## Cost" in outcome.summary_path.read_text(encoding="utf-8")


def test_the_report_prints_the_view_link_too(viewed_sweep, tmp_path, capsys) -> None:
    _, outcome = viewed_sweep
    from mlflow_tracking import report

    status = report.main(
        [
            "--experiment",
            outcome.tracking.experiment_name,
            "--tracking-uri",
            outcome.tracking.uri,
            "--out",
            str(tmp_path / "report"),
            "--no-log",
        ]
    )
    assert status == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.endswith(f"&viewStateShareKey={outcome.view_key}")


def _close_assistant(browser: Browser) -> None:
    """Closes MLflow's assistant panel with its "Close" button, as docs/mlflow-ui.md says."""
    browser.wait_for(_ASSISTANT_OPEN, timeout_s=PAGE_LIMIT_S)
    assert browser.evaluate(_CLOSE_ASSISTANT)
    browser.wait_for(f"!({_ASSISTANT_OPEN})", timeout_s=PAGE_LIMIT_S)


def _columns(browser: Browser) -> dict[str, int]:
    """Drawn column headers by name -> position, left to right (the grid draws what fits)."""
    return {name: index for index, name in browser.evaluate(_HEADER_ORDER) if name}


def test_chromium_renders_the_view_on_a_real_mlflow_ui(viewed_sweep, chromium) -> None:
    space, outcome = viewed_sweep
    from mlflow_tracking.saved_view import runs_page_link

    link = runs_page_link(
        outcome.tracking.display_uri, outcome.tracking.experiment_id, outcome.view_key
    )
    metric = best_metric_name(space.metric)
    parent_name = parent_run_name(space, "sweep")
    runs = outcome.tracking.client().search_runs([outcome.tracking.experiment_id])
    trial_names = [run.info.run_name for run in runs if run.info.run_id != outcome.parent_run_id]
    values = {run.info.run_id: run.data.metrics[metric] for run in runs}
    with Browser(chromium) as browser:
        browser.open(link)
        # The view has applied once its metric column is there and the rows have loaded.
        browser.wait_for(
            f"{_HEADERS}.includes({json.dumps(metric)}) && "
            f"document.body.innerText.includes({json.dumps(parent_name)})",
            timeout_s=PAGE_LIMIT_S,
        )
        _close_assistant(browser)
        columns = _columns(browser)
        text = browser.evaluate("document.body.innerText")
        rows = browser.evaluate(_ROW_ORDER)
    # The score, then the swept parameters (issue 25: they were off-screen to the right behind
    # every report metric), then the report metrics, which the grid may leave undrawn.
    assert {metric, TEMPERATURE, ALPHA} <= set(columns)
    assert columns[metric] < min(columns[TEMPERATURE], columns[ALPHA])
    assert columns.get(REPORT_SCORE, 10**6) > max(columns[TEMPERATURE], columns[ALPHA])
    assert f"Sort: {metric}" in text
    assert "shared view" in text  # the UI says it shows the saved view
    assert parent_name in text
    for name in trial_names:
        assert name in text
    # Best first: the table's rows (run ids in display order) by the sweep metric, descending.
    order = list(dict.fromkeys(row.split(" ", 1)[1] for row in sorted(rows, key=_index)))
    assert set(order) == set(values)
    shown = [values[run_id] for run_id in order]
    assert shown == sorted(shown, reverse=True)


def test_chromium_draws_the_chart_full_width_with_whole_axis_names(
    viewed_sweep, chromium, tmp_path
) -> None:
    space, outcome = viewed_sweep
    from mlflow_tracking.saved_view import runs_page_link

    link = runs_page_link(
        outcome.tracking.display_uri,
        outcome.tracking.experiment_id,
        outcome.view_key,
        charts=True,
    )
    # The parallel-coordinates plot: one axis per dimension (two swept parameters, the metric).
    axes = "(n => (n >= 3 ? n : 0))(document.querySelectorAll('.parcoords g.dimension').length)"
    with Browser(chromium) as browser:
        browser.open(link)
        browser.wait_for(axes, timeout_s=PAGE_LIMIT_S)
        _close_assistant(browser)
        browser.open(link)  # a second visit: closed stays closed (the browser's localStorage)
        count = browser.wait_for(axes, timeout_s=PAGE_LIMIT_S)
        text = browser.evaluate("document.body.innerText")
        names = browser.evaluate(_AXIS_NAMES)
        widths = browser.evaluate(
            "[document.querySelector('.parcoords').getBoundingClientRect().width,"
            " window.innerWidth]"
        )
        shot = browser.command("Page.captureScreenshot", {"format": "png"})
    (tmp_path / "chart_view.png").write_bytes(base64.b64decode(shot["data"]))
    assert "Ask questions about your experiments" not in text  # the assistant stayed closed
    assert "Swept parameters against the sweep metric" in text
    assert "Parallel Coordinates" in text
    assert count == 3
    # Whole names: the UI cuts a name that does not fit its share of the width to 15 characters.
    assert sorted(names) == sorted([TEMPERATURE, ALPHA, best_metric_name(space.metric)])
    chart, window = widths
    assert chart > 0.7 * window  # was a third of it beside the runs list and the assistant


def test_a_finals_view_starts_with_the_mean_over_seeds(viewed_sweep, mlflow_server, chromium):
    # A final's runs as tuning/final.py logs them (seed runs under a parent holding the Table 1
    # means), viewed through the view final.py stores: the answer is the mean, not a seed.
    space, _ = viewed_sweep
    from mlflow_tracking.saved_view import runs_page_link, write_saved_view

    client = make_client(mlflow_server.uri)
    experiment_id = client.create_experiment("test-final-view")
    sweep_id = "final0001"
    tags = {TAG_SWEEP_ID: sweep_id}
    parent = client.create_run(experiment_id, run_name="final: seeds [0, 1, 2]", tags=tags)
    every_cycle_normal = np.array([[60, 0, 0, 0], [30, 0, 0, 0], [20, 0, 0, 0], [10, 0, 0, 0]])
    mixed = np.array([[40, 10, 5, 5], [10, 15, 5, 0], [5, 5, 10, 0], [2, 3, 0, 5]])
    seeds = {0: (every_cycle_normal, 50.0, 100.0, 0.0), 1: (mixed, 45.0, 66.7, 23.3)}
    seeds[2] = (mixed, 44.0, 65.0, 23.0)
    for seed, (confusion, score, sp, se) in seeds.items():
        run_tags = {**tags, PARENT_RUN_TAG: parent.info.run_id}
        run = client.create_run(experiment_id, run_name=f"seed={seed}", tags=run_tags)
        metrics = {
            best_metric_name(space.metric): score,
            REPORT_SCORE: score,
            REPORT_SPECIFICITY: sp,
            REPORT_SENSITIVITY: se,
            **prediction_metrics(REPORT_PREFIX, confusion),
        }
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(key, value, 0, 0) for key, value in metrics.items()],
            params=[Param("train.seed", str(seed))],
            tags=[RunTag(TAG_DEGENERATE, metrics_degenerate_note(metrics) or NOT_DEGENERATE)],
        )
        client.set_terminated(run.info.run_id)
    means = {
        mean_metric_name(REPORT_SCORE): 46.33,
        mean_metric_name(REPORT_SPECIFICITY): 77.23,
        mean_metric_name(REPORT_SENSITIVITY): 15.43,
        best_metric_name(space.metric): 46.33,
    }
    for key, value in means.items():
        client.log_metric(parent.info.run_id, key, value)
    view = sweep_view(space, sweep_id, "final")
    assert write_saved_view(
        client, experiment_id, sweep_share_key(sweep_id), view, mlflow_server.uri
    )
    link = runs_page_link(mlflow_server.uri, experiment_id, sweep_share_key(sweep_id))
    with Browser(chromium) as browser:
        browser.open(link)
        browser.wait_for("document.body.innerText.includes('seed=2')", timeout_s=PAGE_LIMIT_S)
        _close_assistant(browser)
        columns = _columns(browser)
        rows = browser.evaluate(_ROW_ORDER)
    order = list(dict.fromkeys(row.split(" ", 1)[1] for row in sorted(rows, key=_index)))
    assert order[0] == parent.info.run_id  # the mean over seeds, not the degenerate best seed
    score, sp, se = (
        mean_metric_name(k) for k in (REPORT_SCORE, REPORT_SPECIFICITY, REPORT_SENSITIVITY)
    )
    assert columns[score] < columns["train.seed"] < columns[sp] < columns[se]
