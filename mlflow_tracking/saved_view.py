"""Saved views of the MLflow runs page: the experiment tag `mlflow.sharedViewState.<key>` that the
MLflow 3.x UI applies when its runs page is opened with `viewStateShareKey=<key>`, and the link
that opens it. Format read from the built UI of mlflow 3.17.2 (server/js/build: the share key
loader of the experiment runs page and the runs-compare chart config types).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lungsrad.errors import first_line
from mlflow_tracking.store import is_transient
from mlflow_tracking.uri import redact_text

SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# The UI opens the "GenAI" view of an experiment unless the link asks for "Model training"; the
# share key is only applied on the /runs route (the bare experiment route redirects and drops it).
WORKFLOW_PARAMETER = "workflowType=machine_learning"
# MLflow limits an experiment tag value (5000 characters in 3.x); a longer state is sent as
# "deflate;" + base64 of its zlib stream, which the UI inflates.
_MAX_PLAIN_STATE_CHARS = 4000
_COMPRESSED_PREFIX = "deflate;"
_SECTION_ID = "lungsrad-answer"
_CHART_ID = "lungsrad-parallel-coordinates"
_RUN_NAME_COLUMN = "attributes.`Run Name`"
_MAX_COLUMN_WIDTH = 260


@dataclass(frozen=True)
class SweepView:
    """What the runs page of a sweep shows.

    Attributes:
        name: the saved view's name in the UI.
        metric: the first column, which the rows are sorted by (a sweep's running best; a
            final's mean score, which only its parent run holds, so the answer is the top row).
        maximize: sort best first for a metric to maximise.
        other_metrics: further metric columns (the report/ scores), after the params.
        params: param columns (every swept parameter, then the seed), right after `metric`.
        tags: tag columns (trial status, degenerate, variant).
        search_filter: MLflow search filter of the rows ("" for all runs of the experiment).
        chart_metric: the parallel-coordinates chart's metric (default: `metric`); it needs a
            metric the trial runs hold.
        objective_metrics: a multi-objective sweep's further objectives: columns right after
            `metric` and axes of the chart after it.
    """

    name: str
    metric: str
    maximize: bool
    other_metrics: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    search_filter: str = ""
    chart_metric: str | None = None
    objective_metrics: tuple[str, ...] = ()

    @property
    def chart_params(self) -> list[str]:
        """Parameters on the parallel-coordinates chart (the swept ones; the seed is not)."""
        return [name for name in self.params if name != "train.seed"] or list(self.params)


def metric_column(key: str) -> str:
    """The runs table's column id of a metric."""
    return f"metrics.`{key}`"


def param_column(key: str) -> str:
    """The runs table's column id of a param."""
    return f"params.`{key}`"


def tag_column(key: str) -> str:
    """The runs table's column id of a tag."""
    return f"tags.`{key}`"


def view_state(view: SweepView) -> dict[str, Any]:
    """The UI state of the view: columns, sort, search filter and a parallel-coordinates chart.

    Columns: the run name, the score (`metric`), the params, the other metrics, the tags, so
    the swept values sit beside the score instead of off-screen to the right.

    Keys as the MLflow 3.17 UI reads them: `columnWidths` only works together with
    `columnOrder`; without `isAccordionReordered` the UI sorts the chart section to the bottom,
    a section without `columns: 1` draws the chart a third of the page wide, and
    `runListHidden` gives the chart view's width to the charts instead of a runs list beside
    them (the table view is unchanged). The chart cuts an axis name to 15 characters when it is
    wider than 0.8 x the chart's width / its number of axes (7417.*.chunk.js of the build).
    """
    columns = [
        _RUN_NAME_COLUMN,
        metric_column(view.metric),
        *(metric_column(key) for key in view.objective_metrics),
        *(param_column(key) for key in view.params),
        *(
            metric_column(key)
            for key in view.other_metrics
            if key != view.metric and key not in view.objective_metrics
        ),
        *(tag_column(key) for key in view.tags),
    ]
    return {
        "searchFilter": view.search_filter,
        "orderByKey": metric_column(view.metric),
        "orderByAsc": not view.maximize,
        "selectedColumns": columns[1:],
        "columnOrder": columns,
        "columnWidths": {
            _RUN_NAME_COLUMN: 260,
            **{column: _column_width(column) for column in columns[1:]},
        },
        "isAccordionReordered": True,
        "runListHidden": True,
        "compareRunSections": [
            {
                "uuid": _SECTION_ID,
                "name": "Swept parameters against the sweep metric",
                "display": True,
                "isReordered": True,
                "columns": 1,
            }
        ],
        "compareRunCharts": [
            {
                "type": "PARALLEL",
                "uuid": _CHART_ID,
                "metricSectionId": _SECTION_ID,
                "selectedParams": view.chart_params,
                "selectedMetrics": [view.chart_metric or view.metric, *view.objective_metrics],
                "showAllRuns": True,
                "isGenerated": False,
                "deleted": False,
            }
        ],
    }


def _column_width(column: str) -> int:
    """Pixels that show a column's name whole (the UI's default width cuts it after ~12
    characters), at most _MAX_COLUMN_WIDTH."""
    name = column.split("`")[1] if "`" in column else column
    return min(_MAX_COLUMN_WIDTH, 8 * len(name) + 40)


def encode_state(state: dict[str, Any]) -> str:
    """The state as the tag holds it: JSON text, compressed when it is long."""
    text = json.dumps(state, separators=(",", ":"))
    if len(text) <= _MAX_PLAIN_STATE_CHARS:
        return text
    return _COMPRESSED_PREFIX + base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode()


def decode_state(value: str) -> dict[str, Any]:
    """Inverse of `encode_state`."""
    if value.startswith(_COMPRESSED_PREFIX):
        value = zlib.decompress(base64.b64decode(value[len(_COMPRESSED_PREFIX) :])).decode("utf-8")
    return json.loads(value)


def saved_view_value(view: SweepView, *, now_ms: int | None = None) -> str:
    """The tag value: {"name", "createdAt", "updatedAt", "state": <encoded state>}."""
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps(
        {
            "name": view.name,
            "createdAt": stamp,
            "updatedAt": stamp,
            "state": encode_state(view_state(view)),
        }
    )


def write_saved_view(
    client: Any,
    experiment_id: str,
    key: str,
    view: SweepView,
    uri: str,
    *,
    timeout_s: float = 30.0,
) -> bool:
    """Stores the view on the experiment. A busy store (several sweeps starting on one SQLite
    file) is retried for up to `timeout_s`; a store that refuses the tag (permissions, a
    read-only store) costs one warning line and False: the sweep goes on without the view."""
    deadline = time.monotonic() + timeout_s
    pause = 0.5
    while True:
        try:
            client.set_experiment_tag(
                experiment_id, SHARED_VIEW_TAG_PREFIX + key, saved_view_value(view)
            )
            return True
        except Exception as error:  # MLflow/SQLAlchemy/requests errors differ per store
            if is_transient(error) and time.monotonic() + pause < deadline:
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            line = first_line(error)
            warnings.warn(
                f"MLflow did not store the saved view '{key}' on experiment {experiment_id} "
                f"({redact_text(line, uri)[:200]}); the runs page opens without it",
                stacklevel=2,
            )
            return False


def runs_page_link(
    ui_url: str, experiment_id: str, share_key: str | None = None, *, charts: bool = False
) -> str:
    """The runs page of an experiment in the "Model training" view, with the saved view; with
    `charts` it opens on the chart view (the parallel-coordinates chart) instead of the table."""
    page = f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW_PARAMETER}"
    if share_key:
        page += "&viewStateShareKey=" + urllib.parse.quote(share_key, safe="")
    if charts:
        page += "&compareRunsMode=CHART"
    return page


def ui_hint(display_uri: str, experiment_id: str, share_key: str | None = None) -> str:
    """How a person opens the runs page: the link on a tracking server, else the `mlflow ui`
    command for the local store and the link it serves."""
    if display_uri.startswith(("http://", "https://")):
        return f"open {runs_page_link(display_uri, experiment_id, share_key)}"
    return (
        f"mlflow ui --backend-store-uri {display_uri} --host 127.0.0.1 --port 5000, then open "
        f"{runs_page_link('http://127.0.0.1:5000', experiment_id, share_key)}"
    )


def stored_share_key(experiment_tags: dict[str, str], sweep_id: str | None) -> str | None:
    """The share key of a sweep's view when its experiment holds it, else None."""
    if not sweep_id:
        return None
    key = sweep_share_key(sweep_id)
    return key if SHARED_VIEW_TAG_PREFIX + key in experiment_tags else None


def sweep_share_key(sweep_id: str) -> str:
    """The share key of a sweep's view (one per sweep; a resumed sweep rewrites its own)."""
    return f"lungsrad-{sweep_id}"


def swept_param_keys(paths: Sequence[str]) -> tuple[str, ...]:
    """Param keys of the swept config paths (duplicates dropped, order kept), then the seed."""
    keys = list(dict.fromkeys(paths))
    if "train.seed" not in keys:
        keys.append("train.seed")
    return tuple(keys)
