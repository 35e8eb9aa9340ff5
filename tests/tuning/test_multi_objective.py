"""A two-objective smoke sweep (training loss down, the trial's device-seconds down, a
specificity floor; the tiny model's Score is 50 in every trial, which would leave one point) on a
real local Ray and a real SQLite MLflow store: Optuna's multi-objective TPE runs it, the summary
and pareto/ hold the front's table and plot, best_configs/ one config per front point,
best_config.yaml the tie-break winner, exactly the front's child runs carry `lungsrad.pareto =
true`, and the report read back from MLflow draws the same front. Bad multi-objective spaces are
refused in one line."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sweep_helpers import child_runs, mlflow_client  # noqa: E402  (tests/tuning on sys.path)

from lungsrad.config import load_config
from lungsrad.errors import UserError
from lungsrad.metrics import REPORT_SPECIFICITY, SELECTION_SCORE, TRAIN_LOSS
from mlflow_tracking.pareto import PARETO_FILE, PARETO_PLOT, TAG_PARETO
from mlflow_tracking.report import build_report
from mlflow_tracking.saved_view import (
    SHARED_VIEW_TAG_PREFIX,
    decode_state,
    metric_column,
    tag_column,
)
from mlflow_tracking.tags import TAG_TRIAL_ID
from mlflow_tracking.uri import sqlite_uri
from tests.cli_errors import assert_one_line_error
from tuning.driver import run_sweep
from tuning.pareto_export import BEST_CONFIGS_FOLDER, PARETO_FOLDER
from tuning.result_keys import COST_OBJECTIVE, best_metric_name
from tuning.results import BEST_CONFIG_FILE, read_selection_record
from tuning.search_space import load_search_space
from tuning.settings import DriverSettings

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "test-multi-objective"
FIRST = TRAIN_LOSS
OBJECTIVES = [{"name": FIRST, "mode": "min"}, {"name": COST_OBJECTIVE, "mode": "min"}]
FLOOR = {"name": REPORT_SPECIFICITY, "op": ">=", "value": 0}


@pytest.fixture(scope="module")
def sweep(local_ray, write_space, tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi_objective")
    space_path = write_space(
        folder,
        "two_objectives",
        parameters={
            "method.patch_mix.temperature": {"loguniform": [0.03, 0.3]},
            "train.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
        },
        base_overrides={"train.num_epochs": 1},
        search="tpe",
        num_samples=4,
        max_concurrent_trials=2,
        metrics=OBJECTIVES,
        constraints=[FLOOR],
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
    assert space.is_multi_objective and (space.metric, space.mode) == (FIRST, "min")
    return space, settings, run_sweep(space, settings)


def _objectives(run) -> tuple[float, float]:
    metrics = run.data.metrics
    return metrics[best_metric_name(FIRST)], metrics[best_metric_name(COST_OBJECTIVE)]


def _front(runs) -> set[str]:
    """The non-dominated runs (loss down, cost down), by brute force."""
    values = {run.info.run_id: _objectives(run) for run in runs}

    def beats(a, b) -> bool:
        return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])

    return {
        run_id
        for run_id, value in values.items()
        if not any(beats(other, value) for other in values.values())
    }


@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.slow
def test_every_trial_reports_both_objectives_and_the_front_runs_are_tagged(sweep) -> None:
    _, settings, outcome = sweep
    assert len(outcome.outcomes) == 4 and all(o.status == "done" for o in outcome.outcomes)
    runs = child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    assert len(runs) == 4
    for run in runs:
        loss, cost = _objectives(run)
        assert loss > 0.0 and cost > 0.0 and math.isfinite(loss) and math.isfinite(cost)
    tagged = {run.info.run_id for run in runs if run.data.tags.get(TAG_PARETO) == "true"}
    assert tagged == _front(runs)
    # The persistent study (optuna.db beside mlflow.db) holds both objectives of every trial.
    import optuna

    parent = mlflow_client(settings.tracking_uri).get_run(outcome.parent_run_id)
    study = optuna.load_study(
        study_name=parent.data.tags["lungsrad.optuna_study"],
        storage=sqlite_uri(settings.output_root / "optuna.db"),
    )
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2
    assert sorted(tuple(round(v, 6) for v in trial.values) for trial in study.trials) == sorted(
        tuple(round(v, 6) for v in _objectives(run)) for run in runs
    )
    assert all(run.data.tags.get(TAG_PARETO) in ("true", "false") for run in runs)

    # The saved view: both objectives side by side, then the Pareto tag among the columns.
    client = mlflow_client(settings.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    stored = json.loads(experiment.tags[SHARED_VIEW_TAG_PREFIX + outcome.view_key])
    columns = decode_state(stored["state"])["columnOrder"]
    objectives = [metric_column(best_metric_name(o["name"])) for o in OBJECTIVES]
    assert columns[1:3] == objectives and tag_column(TAG_PARETO) in columns


@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.slow
def test_pareto_table_plot_and_one_config_per_point(sweep) -> None:
    _, settings, outcome = sweep
    runs = child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    front = [run for run in runs if run.info.run_id in _front(runs)]
    names = {run.info.run_name for run in front}

    table = (outcome.folder / PARETO_FOLDER / PARETO_FILE).read_text()
    assert (outcome.folder / PARETO_FOLDER / PARETO_PLOT).read_bytes().startswith(b"\x89PNG")
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 4  # every configuration, the front first
    on_front = [row for row in rows if row.split("|")[1].strip().strip("*").startswith("front")]
    assert {row.split("|")[2].strip() for row in on_front} == names
    assert all(row.endswith("| yes |") for row in rows)  # specificity >= 0 always holds
    summary = outcome.summary_path.read_text()
    assert "## Pareto front" in summary and f"]({PARETO_FOLDER}/{PARETO_PLOT})" in summary

    configs = sorted((outcome.folder / BEST_CONFIGS_FOLDER).glob("*.yaml"))
    # Named after the runs (characters other than letters, digits, '.', '=', '-' as '_').
    assert {path.stem for path in configs} == {re.sub(r"[^\w.=-]+", "_", n) for n in names}
    for path in configs:
        load_config(path)  # a complete run config
        assert read_selection_record(path)["metric"] == best_metric_name(FIRST)

    # best_config.yaml: the front's lowest loss (then the lowest cost), and says so.
    best = outcome.folder / BEST_CONFIG_FILE
    assert best == outcome.best_config_path
    winner = min(front, key=_objectives)
    text = best.read_text()
    assert "wins the tie-break" in text and f"{BEST_CONFIGS_FOLDER}/" in text
    assert read_selection_record(best)["mean"] == pytest.approx(_objectives(winner)[0], abs=1e-5)
    assert rows[0].split("|")[2].strip() == winner.info.run_name
    assert {run.data.tags[TAG_TRIAL_ID] for run in front} >= {outcome.best.representative.trial_id}


@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.slow
def test_the_report_from_mlflow_draws_the_same_front(sweep, tmp_path: Path) -> None:
    _, settings, outcome = sweep
    client = mlflow_client(settings.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    report = build_report(
        client,
        experiment_id=experiment.experiment_id,
        parent_run_id=outcome.parent_run_id,
        out_dir=tmp_path / "report",
        log_to_parent=False,
    )
    assert tmp_path / "report" / PARETO_PLOT in report.plots
    section = report.markdown[report.markdown.index("## Pareto front") :]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    on_front = {row.split("|")[2].strip() for row in rows if "front" in row.split("|")[1]}
    runs = child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    assert on_front == {run.info.run_name for run in runs if run.info.run_id in _front(runs)}


GOOD = """\
name: multi
base_overrides:
  model: {preset: custom, dims: [8, 16], depths: [1, 2]}
  method.regularization: {enabled: true, stage: 1, blocks: [0, 1]}
  train.num_epochs: 3
parameters:
  method.patch_mix.temperature: {loguniform: [0.03, 0.3]}
search: tpe
num_samples: 5
resources: {cpu: 1}
"""
TWO = (
    "metrics:\n  - {name: selection/icbhi_score, mode: max}\n"
    "  - {name: report/sensitivity, mode: max}\n"
)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_multi_objective_space_loads(tmp_path: Path) -> None:
    text = GOOD + TWO + 'constraints: [{name: report/specificity, op: ">=", value: 70}]\n'
    space = load_search_space(_write(tmp_path, text + "sampler: nsga2\n"))
    assert [(o.name, o.mode) for o in space.objective_list] == [
        (SELECTION_SCORE, "max"),
        ("report/sensitivity", "max"),
    ]
    assert space.sampler == "nsga2" and space.constraints[0].violation(75.0) == -5.0
    assert space.tracked_metrics == ("report/sensitivity", REPORT_SPECIFICITY)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "metrics: [{name: selection/icbhi_score}, {name: report/sensitivty}]\n",
            "metrics[1].name: metric 'report/sensitivty' is not reported under protocol "
            "'paper'; did you mean 'report/sensitivity'?",
        ),
        (
            "metrics: [{name: selection/icbhi_score, mode: up}]\n",
            "metrics[0].mode must be one of 'max' | 'min', got 'up'",
        ),
        (TWO + "metric: report/icbhi_score\n", "give either `metric`/`mode`"),
        (TWO.replace("search", "") + "search: grid\n", "search 'grid' optimises one metric"),
        (
            "metrics: [{name: selection/icbhi_score}, {name: cost/device_seconds, mode: max}]\n",
            "cost/device_seconds can only be minimised",
        ),
        (
            "metrics: [{name: cost/device_seconds, mode: min}, {name: selection/icbhi_score}]\n",
            "cost/device_seconds cannot come first",
        ),
        (
            'constraints: [{name: report/specificity, op: ">=", value: 70}]\n',
            "constraints filter a Pareto front: they need two or more `metrics`",
        ),
        (TWO + 'constraints: [{name: report/specificity, op: "=>", value: 70}]\n', "op must be"),
        ("metric: cost/device_seconds\nmode: min\n", "metric 'cost/device_seconds' is not"),
    ],
)
def test_bad_multi_objective_spaces_are_refused_in_one_line(
    tmp_path: Path, extra: str, message: str
) -> None:
    text = GOOD + extra
    if "search: grid" in extra:
        text = text.replace("search: tpe\n", "").replace(
            "{loguniform: [0.03, 0.3]}", "{grid: [0.05, 0.1]}"
        )
    with pytest.raises(UserError) as caught:
        load_search_space(_write(tmp_path, text))
    line = str(caught.value)
    assert line.splitlines() == [line] and str(tmp_path / "space.yaml") in line
    assert message in line, line


def test_the_cli_refuses_several_metrics_under_one_at_a_time(tmp_path: Path) -> None:
    text = (
        GOOD.replace("search: tpe", "search: one_at_a_time")
        .replace("num_samples: 5", "num_samples: 1")
        .replace("{loguniform: [0.03, 0.3]}", "{choice: [0.05, 0.1]}")
        + TWO
    )
    path = _write(tmp_path, text)
    completed = subprocess.run(
        [sys.executable, str(REPO / "tuning" / "sweep.py"), "--space", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "RAY_TMPDIR": str(tmp_path)},
        timeout=120,
    )
    line = assert_one_line_error(completed, "search 'one_at_a_time' optimises one metric")
    assert f"{path}:" in line and "need `search: tpe`" in line


def test_shipped_example_space_loads() -> None:
    space = load_search_space(REPO / "search_spaces" / "score_vs_sensitivity.yaml")
    assert space.is_multi_objective and space.protocol == "validated"
    assert [o.name for o in space.objective_list] == [SELECTION_SCORE, "val/sensitivity"]


@pytest.mark.parametrize("sampler", ["tpe", "nsga2"])
def test_the_searcher_tells_optuna_every_objective_and_the_constraints(
    tmp_path: Path, sampler: str
) -> None:
    import optuna
    from ray import tune

    from tuning.tuner import _search_algorithm

    text = GOOD + TWO + 'constraints: [{name: report/specificity, op: ">=", value: 70}]\n'
    space = load_search_space(_write(tmp_path, text + f"sampler: {sampler}\n"))
    search = _search_algorithm(space)
    expected = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}
    assert type(search._sampler) is expected[sampler]
    assert search.set_search_properties(None, None, {"x": tune.uniform(0.0, 1.0)})
    names = [best_metric_name(o.name) for o in space.objective_list]
    constraint = best_metric_name(REPORT_SPECIFICITY)
    results = [
        {names[0]: 60.0, names[1]: 40.0, constraint: 80.0},  # keeps specificity >= 70
        {names[0]: 70.0, names[1]: 50.0, constraint: 60.0},  # breaks it by 10
        {names[0]: 65.0, names[1]: 45.0},  # no specificity: counted as broken
    ]
    for index, result in enumerate(results):
        assert search.suggest(f"t{index}") is not None
        search.on_trial_complete(f"t{index}", result=result)
    study = search._ot_study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    trials = study.get_trials()
    assert [t.values for t in trials] == [[60.0, 40.0], [70.0, 50.0], [65.0, 45.0]]
    violations = [list(t.constraints.values()) for t in trials]
    assert violations[0] == [-10.0] and violations[1] == [10.0] and violations[2][0] > 1e6
    # Optuna's own constrained front: the only feasible trial.
    assert [t.number for t in study.best_trials] == [0]


def test_asha_stops_trials_by_the_first_objective(tmp_path: Path) -> None:
    from tuning.tuner import _scheduler

    text = GOOD + TWO + "scheduler: {kind: asha, grace_period: 1}\n"
    scheduler = _scheduler(load_search_space(_write(tmp_path, text)))
    assert scheduler._metric == best_metric_name(SELECTION_SCORE) and scheduler._metric_op == 1.0
    # One objective: the Tune metric (TuneConfig) drives it, as before.
    assert (
        _scheduler(load_search_space(_write(tmp_path, GOOD + "scheduler: asha\n")))._metric is None
    )
