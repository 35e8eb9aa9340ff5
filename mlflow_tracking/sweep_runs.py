"""A sweep's runs as reports read them: its parent run (given, or the latest) and the finished
child runs under it, each as a `TrialPoint` (values, variant, seed, final metrics).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lungsrad.errors import UserError
from mlflow_tracking.tags import (
    PARENT_RUN_TAG,
    TAG_ROLE,
    TAG_SEED,
    TAG_TRIAL_ID,
    TAG_VALUES,
    TAG_VARIANT,
)
from mlflow_tracking.uri import redact_uri

# The variant of a run without a variant tag, and the value label of the base point.
BASE = "base"


@dataclass(frozen=True)
class TrialPoint:
    """One finished child run as the report sees it."""

    run_id: str
    values: dict[str, str]  # swept parameter -> value label ({} for the base point)
    variant: str
    seed: int | None
    metrics: dict[str, float]
    config_name: str = ""  # the run config's `name` param
    trial_id: str = ""  # the Tune trial id (ties rank by it, as in summary.md)
    run_name: str = ""  # the MLflow run name


def find_parent_run(client: Any, experiment_id: str, parent_run_id: str | None) -> Any:
    """The given parent run, else the experiment's latest sweep (or final) parent run."""
    if parent_run_id is not None:
        try:
            return client.get_run(parent_run_id)
        except Exception:
            raise UserError(
                f"parent run {parent_run_id} not found in the MLflow store "
                f"'{redact_uri(str(client.tracking_uri))}'; pass the --tracking-uri it was "
                "logged to"
            ) from None
    runs = [
        run
        for role in ("sweep", "final")
        for run in client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_ROLE}` = '{role}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    ]
    runs.sort(key=lambda run: run.info.start_time, reverse=True)
    if not runs:
        raise UserError(
            f"experiment {experiment_id} in '{redact_uri(str(client.tracking_uri))}' has no "
            "sweep or final parent run; pass --parent-run-id"
        )
    return runs[0]


def sweep_child_runs(client: Any, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every child run of the parent, whatever its status (all pages of the search)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def child_points(client: Any, experiment_id: str, parent_run_id: str) -> list[TrialPoint]:
    """Finished child runs of the parent (their final metrics)."""
    points = []
    for run in sweep_child_runs(client, experiment_id, parent_run_id):
        if run.info.status != "FINISHED":
            continue
        tags = run.data.tags
        seed = tags.get(TAG_SEED)
        points.append(
            TrialPoint(
                run_id=run.info.run_id,
                values=json.loads(tags.get(TAG_VALUES, "{}")),
                variant=tags.get(TAG_VARIANT, BASE),
                seed=int(seed) if seed is not None and seed.isdigit() else None,
                metrics=dict(run.data.metrics),
                config_name=run.data.params.get("name", ""),
                trial_id=tags.get(TAG_TRIAL_ID, ""),
                run_name=run.info.run_name or "",
            )
        )
    return points
