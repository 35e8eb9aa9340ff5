"""--warm-start (issue 27): a TPE sweep seeded with an earlier sweep's finished trials gets them as
finished trials of its Optuna study (their values those of the earlier MLflow runs), says so on
the console and on its parent run; an earlier sweep is found by sweep id, folder or parent run
id; an unknown sweep, other parameters or another metric are refused in one line (exit 2); values
outside the new space are left out with one line saying how many and why.
"""

from __future__ import annotations

import contextlib
import io
import json

import optuna
import pytest

from mlflow_tracking.report import build_report
from mlflow_tracking.store import TrackingTarget
from mlflow_tracking.tags import TAG_VALUES
from mlflow_tracking.uri import sqlite_uri
from tuning.driver import run_sweep
from tuning.result_keys import best_metric_name
from tuning.search_space import load_search_space
from tuning.settings import DriverSettings
from tuning.study import STUDY_FILE, TAG_STUDY_NAME
from tuning.sweep import main
from tuning.warm_start import (
    ATTR_SEEDED_FROM,
    ATTR_SEEDED_RUN,
    TAG_WARM_PARENT_RUN,
    TAG_WARM_SWEEP_ID,
    TAG_WARM_TRIALS,
    read_warm_start,
)

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

TEMPERATURE = "method.patch_mix.temperature"
ALPHA = "method.patch_mix.alpha"
# The parameters of conftest.tpe_sweep, the earlier sweep.
PARAMETERS = {TEMPERATURE: {"loguniform": [0.03, 0.3]}, ALPHA: {"choice": [0.5, 2.0]}}
TPE = {"search": "tpe", "seeds": [0], "resources": {"cpu": 1}}
ONE_EPOCH = {"train.num_epochs": 1}


def _settings(root, experiment: str, **extra) -> DriverSettings:
    return DriverSettings(
        output_root=root,
        storage_path=root / "ray_results",
        tracking_uri=sqlite_uri(root / "mlflow.db"),
        experiment=experiment,
        ray_address=None,
        **extra,
    )


@pytest.fixture(scope="module")
def earlier(local_ray, tpe_sweep):
    """The shared finished 3-trial TPE smoke sweep (conftest.tpe_sweep): its folder, output
    root, outcome, child runs and sweep id."""
    _, outcome, _ = tpe_sweep
    client = outcome.tracking.client()
    runs = client.search_runs(
        [outcome.tracking.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'",
    )
    state = json.loads((outcome.folder / "sweep.json").read_text())
    root = outcome.folder.parents[1]
    return root.parent, root, outcome, runs, state["sweep_id"]


@pytest.fixture(scope="module")
def warmed(earlier, write_space):
    """A 1-trial TPE sweep warm-started from the earlier one (another experiment)."""
    folder, root, _, _, sweep_id = earlier
    space = load_search_space(
        write_space(
            folder, "later", parameters=PARAMETERS, num_samples=1, base_overrides=ONE_EPOCH, **TPE
        )
    )
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        outcome = run_sweep(space, _settings(root, "lungsrad-later", warm_start=sweep_id))
    return outcome, console.getvalue()


def test_the_warm_started_study_holds_the_earlier_trials_as_finished_ones(earlier, warmed) -> None:
    _, root, _, runs, sweep_id = earlier
    outcome, _ = warmed
    state = json.loads((outcome.folder / "sweep.json").read_text())
    study = optuna.load_study(
        study_name=state[TAG_STUDY_NAME], storage=sqlite_uri(root / STUDY_FILE)
    )
    seeded = [trial for trial in study.trials if ATTR_SEEDED_FROM in trial.user_attrs]
    own = [trial for trial in study.trials if ATTR_SEEDED_FROM not in trial.user_attrs]
    assert len(seeded) == len(runs) == 3 and len(own) == 1
    assert {trial.state for trial in study.trials} == {optuna.trial.TrialState.COMPLETE}
    assert {trial.user_attrs[ATTR_SEEDED_FROM] for trial in seeded} == {sweep_id}
    by_run = {run.info.run_id: run for run in runs}
    best = best_metric_name("selection/icbhi_score")
    for trial in seeded:
        run = by_run[trial.user_attrs[ATTR_SEEDED_RUN]]
        labels = json.loads(run.data.tags[TAG_VALUES])
        assert trial.value == pytest.approx(run.data.metrics[best])
        assert trial.params[TEMPERATURE] == pytest.approx(float(labels[TEMPERATURE]))
        assert trial.params[ALPHA] == float(labels[ALPHA])


def test_the_warm_start_is_on_the_console_and_the_parent_run(earlier, warmed) -> None:
    _, _, previous, _, sweep_id = earlier
    outcome, console = warmed
    assert (
        f"warm start: 3 finished trial(s) of sweep 'earlier' (sweep id {sweep_id}, MLflow "
        f"parent run {previous.parent_run_id}) seed the study"
    ) in console
    parent = outcome.tracking.client().get_run(outcome.parent_run_id)
    assert parent.data.tags[TAG_WARM_SWEEP_ID] == sweep_id
    assert parent.data.tags[TAG_WARM_PARENT_RUN] == previous.parent_run_id
    assert parent.data.tags[TAG_WARM_TRIALS] == "3"
    assert parent.data.params[TAG_WARM_SWEEP_ID] == sweep_id


def test_the_report_lists_the_seeded_trials(earlier, warmed, tmp_path) -> None:
    _, _, _, runs, sweep_id = earlier
    outcome, _ = warmed
    report = build_report(
        outcome.tracking.client(),
        experiment_id=outcome.tracking.experiment_id,
        parent_run_id=outcome.parent_run_id,
        out_dir=tmp_path / "report",
        log_to_parent=False,
    )
    assert "## Seeded from earlier" in report.markdown
    assert f"3 finished trial(s) of sweep 'earlier' (sweep id {sweep_id}" in report.markdown
    rows = [line for line in report.markdown.splitlines() if line.startswith("| seeded from ")]
    assert len(rows) == 3
    assert {run.info.run_id for run in runs} == {row.split("`")[1] for row in rows}


def test_the_earlier_sweep_is_found_by_id_folder_or_parent_run(earlier, write_space) -> None:
    folder, root, previous, _, sweep_id = earlier
    space = load_search_space(write_space(folder, "again", parameters=PARAMETERS, **TPE))
    target = TrackingTarget(previous.tracking.uri, "x", "0")
    for reference in (sweep_id, str(previous.folder), previous.parent_run_id):
        warm = read_warm_start(space, target, reference, storage_path=root / "ray_results")
        assert warm.parent_run_id == previous.parent_run_id and len(warm.trials) == 3


def test_values_outside_the_new_space_are_left_out_with_one_line(
    earlier, write_space, capsys
) -> None:
    folder, root, previous, runs, sweep_id = earlier
    temperatures = sorted(float(json.loads(r.data.tags[TAG_VALUES])[TEMPERATURE]) for r in runs)
    # The new range keeps the lowest earlier temperature and leaves out the other two.
    high = (temperatures[0] + temperatures[1]) / 2
    space = load_search_space(
        write_space(
            folder,
            "narrower",
            parameters={TEMPERATURE: {"loguniform": [0.03, high]}, ALPHA: {"choice": [0.5, 2.0]}},
            **TPE,
        )
    )
    target = TrackingTarget(previous.tracking.uri, "x", "0")
    warm = read_warm_start(space, target, sweep_id, storage_path=root / "ray_results")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(warm.trials) == 1 and warm.left_out == 2
    assert lines == [
        "warm start: 2 of 3 earlier trial(s) left out: 2 with values outside this space's "
        "bounds or choices, 0 without a finite best/selection/icbhi_score"
    ]
    assert warm.trials[0].params[TEMPERATURE] == pytest.approx(temperatures[0])


@pytest.mark.parametrize(
    ("parameters", "keys", "reference", "message"),
    [
        (PARAMETERS, {}, "0badc0de", "--warm-start 0badc0de: no sweep has that sweep id"),
        (
            {ALPHA: {"choice": [0.5, 2.0]}},
            {},
            None,
            "that sweep swept " + ALPHA + ", " + TEMPERATURE,
        ),
        (PARAMETERS, {"metric": "test/sensitivity"}, None, "that sweep optimised"),
    ],
    ids=["unknown sweep", "other parameters", "other metric"],
)
def test_a_bad_warm_start_is_refused_in_one_line(
    earlier, write_space, capsys, parameters, keys, reference, message
) -> None:
    folder, root, _, _, sweep_id = earlier
    space = write_space(folder, "refused", parameters=parameters, **TPE, **keys)
    argv = ["--space", str(space), "--output-root", str(root)]
    status = main([*argv, "--warm-start", reference or sweep_id])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2 and len(lines) == 1, captured.err
    assert message in lines[0] and "Traceback" not in captured.err
    assert "local Ray at" not in captured.out  # refused before Ray started
