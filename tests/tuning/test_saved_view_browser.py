"""What a person sees: a smoke sweep logs to a real `mlflow server`, prints the link to its saved
view, and headless Chromium (Debian's `chromium`; `.ci/run` installs it) opens that link. The
rendered runs page shows the saved view: the sweep metric, report and parameter columns, sorted
best first, the sweep's parent row and its trials."""

from __future__ import annotations

import json

import pytest

from lungsrad.metrics import REPORT_SCORE
from mlflow_tracking.saved_view import SHARED_VIEW_TAG_PREFIX, decode_state
from mlflow_tracking.tracker import TAG_SWEEP_ID, TAG_TRIAL_STATUS
from tests.browser import Browser, find_chromium
from tuning.cost import (
    COST_DEVICE_HOURS,
    COST_DEVICE_SECONDS,
    COST_EPOCHS_MAX,
    COST_EPOCHS_RUN,
    COST_HOURS_UNTIL_BEST,
)
from tuning.search_space import load_search_space
from tuning.sweep import DriverSettings, parent_run_name, print_outcome, run_sweep
from tuning.trainable import best_metric_name

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
        assert run.data.tags[TAG_SWEEP_ID] == outcome.folder.name.rsplit("_", 1)[-1]
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
        headers = set(browser.evaluate(_HEADERS))
        text = browser.evaluate("document.body.innerText")
        rows = browser.evaluate(_ROW_ORDER)
    assert {metric, REPORT_SCORE, TEMPERATURE, ALPHA} <= headers
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


def test_chromium_draws_the_parallel_coordinates_chart_in_chart_mode(viewed_sweep, chromium):
    _, outcome = viewed_sweep
    from mlflow_tracking.saved_view import runs_page_link

    link = runs_page_link(
        outcome.tracking.display_uri,
        outcome.tracking.experiment_id,
        outcome.view_key,
        charts=True,
    )
    with Browser(chromium) as browser:
        browser.open(link)
        # The parallel-coordinates plot (one axis per dimension: two swept parameters and the
        # metric), drawn inside the view's own chart section.
        axes = browser.wait_for(
            "(n => (n >= 3 ? n : 0))(document.querySelectorAll('.parcoords g.dimension').length)",
            timeout_s=PAGE_LIMIT_S,
        )
        text = browser.evaluate("document.body.innerText")
    assert "Swept parameters against the sweep metric" in text
    assert "Parallel Coordinates" in text
    assert axes == 3
