"""A small joint (TPE) sweep with re-seeding on a real local Ray and a real SQLite MLflow store:
the top configurations run again on an extra seed and best_config.yaml records the seeds and the
mean; the report of the joint search logs report/importance.csv (one row per swept parameter)
and never groups different configurations as seeds; the MLflow UI's tags and description."""

from __future__ import annotations

import csv
import json
import math

import pytest

from mlflow_tracking.report import build_report
from mlflow_tracking.tags import (
    EXPERIMENT_KIND_TAG,
    NOT_DEGENERATE,
    RUN_DESCRIPTION_TAG,
    TAG_DEGENERATE,
    TAG_SEED,
    TAG_VALUES,
    TRAINING_EXPERIMENT_KIND,
)
from mlflow_tracking.uri import sqlite_uri
from tuning.driver import run_sweep
from tuning.result_keys import best_metric_name
from tuning.results import read_selection_record
from tuning.search_space import load_search_space
from tuning.settings import DriverSettings

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

from sweep_helpers import child_runs, mlflow_client  # noqa: E402

EXPERIMENT = "test-sweep-analysis"
PARAMETERS = {
    "method.patch_mix.temperature": {"loguniform": [0.03, 0.3]},
    "method.regularization.sigma": {"uniform": [0.5, 2.0]},
}


@pytest.fixture(scope="module")
def sweep(local_ray, write_space, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep_analysis")
    space_path = write_space(
        folder,
        "joint",
        parameters=PARAMETERS,
        search="tpe",
        num_samples=3,
        max_concurrent_trials=2,
        seeds=[0],
        reseed={"top_k": 2, "seeds": [1]},
        resources={"cpu": 1},
    )
    settings = DriverSettings(
        output_root=folder / "runs",
        storage_path=folder / "runs" / "ray_results",
        tracking_uri=sqlite_uri(folder / "runs" / "mlflow.db"),
        experiment=EXPERIMENT,
        ray_address=None,
    )
    space = load_search_space(space_path)
    return space, settings, run_sweep(space, settings)


def _by_configuration(runs) -> dict[str, dict[int, object]]:
    configurations: dict[str, dict[int, object]] = {}
    for run in runs:
        values = json.loads(run.data.tags[TAG_VALUES])
        assert set(values) == set(PARAMETERS)
        seed = int(run.data.tags[TAG_SEED])
        configurations.setdefault(json.dumps(values, sort_keys=True), {})[seed] = run
    return configurations


def test_reseed_reruns_the_top_configurations_and_exports_the_best_mean(sweep) -> None:
    space, settings, outcome = sweep
    assert len(outcome.outcomes) == 5 and all(o.status == "done" for o in outcome.outcomes)
    runs = child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    configurations = _by_configuration(runs)
    assert sorted(sorted(seeds) for seeds in configurations.values()) == [[0], [0, 1], [0, 1]]
    best_name = best_metric_name(space.metric)
    # Rank of each seed-0 trial: not degenerate first (its lungsrad.degenerate tag), then score.
    seed0 = {
        key: (
            seeds[0].data.tags[TAG_DEGENERATE] == NOT_DEGENERATE,
            seeds[0].data.metrics[best_name],
        )
        for key, seeds in configurations.items()
    }
    reseeded = [key for key, seeds in configurations.items() if 1 in seeds]
    left_out = [key for key in configurations if key not in reseeded]
    # The two best single trials re-ran (ties go to the earlier trial).
    assert max(seed0[key] for key in left_out) <= min(seed0[key] for key in reseeded)

    record = read_selection_record(outcome.best_config_path)

    def rank(key: str) -> tuple[bool, float]:
        # A configuration with a degenerate seed ranks below every one without; then best mean.
        runs = configurations[key].values()
        degenerate = any(run.data.tags[TAG_DEGENERATE] != NOT_DEGENERATE for run in runs)
        return degenerate, -sum(run.data.metrics[best_name] for run in runs) / len(runs)

    chosen = min(configurations, key=rank)
    assert record["seeds"] == sorted(configurations[chosen]) and record["reseeded"] is True
    assert record["mean"] == pytest.approx(-rank(chosen)[1], abs=1e-5)
    text = outcome.best_config_path.read_text()
    if len(record["seeds"]) == 2:
        assert record["ci95"] is None  # two seeds: no interval, never [-95.80, 267.23]
        assert "rests on 2 seeds" in text and "(n=2: no interval;" in text
    summary = outcome.summary_path.read_text()
    ranks = [line for line in summary.splitlines() if line.startswith("| 1 |")]
    assert ranks and record["metric"] in summary
    if len(record["seeds"]) == 2:
        assert "(n=2: no interval)" in ranks[0]  # best first, said to have no interval


def test_joint_report_importance_and_no_seed_grouping_of_different_configs(sweep, tmp_path) -> None:
    _, settings, outcome = sweep
    client = mlflow_client(settings.tracking_uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    report = build_report(
        client, experiment_id=experiment_id, parent_run_id=None, out_dir=tmp_path / "report"
    )
    assert report.kind == "joint"
    logged = {item.path for item in client.list_artifacts(outcome.parent_run_id, "report")}
    assert {"report/importance.csv", "report/slice.png", "report/contour.png"} <= logged
    assert not any("sensitivity_" in path for path in logged)
    local = client.download_artifacts(outcome.parent_run_id, "report/importance.csv", str(tmp_path))
    with open(local, encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(row["parameter"] for row in rows) == sorted(PARAMETERS)
    assert all(math.isfinite(float(row["importance"])) for row in rows)
    domains = {row["parameter"]: row["domain"] for row in rows}
    assert domains["method.patch_mix.temperature"] == "log-float"

    runs = {
        run.info.run_id: run
        for run in child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    }
    assert len(report.configurations) == len(_by_configuration(runs.values())) == 3
    for configuration in report.configurations:  # a group holds one configuration's seeds only
        values = {runs[run_id].data.tags[TAG_VALUES] for run_id in configuration.run_ids}
        seeds = [runs[run_id].data.tags[TAG_SEED] for run_id in configuration.run_ids]
        assert len(values) == 1 and len(seeds) == len(set(seeds))
        assert configuration.score.count == len(seeds)


def test_mlflow_ui_fields(sweep) -> None:
    _, settings, outcome = sweep
    client = mlflow_client(settings.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT_KIND
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.run_name == "joint: tpe over temperature, sigma"
    assert outcome.best.representative.trial_id in parent.data.tags[RUN_DESCRIPTION_TAG]
    # The best trial is named by its run name, as the runs table shows it.
    best_run = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`lungsrad.trial_id` = '{outcome.best.representative.trial_id}'",
    )[0]
    assert f"**{best_run.info.run_name}**" in parent.data.tags[RUN_DESCRIPTION_TAG]
    assert f"{outcome.best.mean_value:.2f}" in parent.data.tags[RUN_DESCRIPTION_TAG]
    assert parent.data.metrics["best_config/seeds"] == 2.0
    names = {
        run.info.run_name
        for run in child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    }
    assert all(name.startswith("temperature=") and " sigma=" in name for name in names), names
