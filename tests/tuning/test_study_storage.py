"""The persistent Optuna study of a TPE sweep (issue 27): a smoke sweep's study is in the RDB
storage beside the MLflow store, with one finished trial per MLflow child run and the same values,
named after the sweep and tied to it by user attributes and parent-run tags; a storage that cannot
be opened is refused in one line before Ray starts. That an interrupted sweep resumed with --resume
continues the same study without duplicating a trial is checked by the SIGINT test of
tests/reliability/test_interrupt.py (a TPE sweep).
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from ray import tune
from sweep_helpers import (
    child_runs,
)

from mlflow_tracking.tags import TAG_VALUES
from mlflow_tracking.uri import sqlite_uri
from tuning.result_keys import best_metric_name
from tuning.study import (
    ATTR_PARENT_RUN_ID,
    ATTR_SPACE_FILE,
    ATTR_SWEEP_ID,
    STUDY_FILE,
    TAG_STUDY_NAME,
    TAG_STUDY_STORAGE,
    create_study,
    open_sweep_study,
    searcher_arguments,
    study_name,
)
from tuning.sweep import main

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

TEMPERATURE = "method.patch_mix.temperature"
ALPHA = "method.patch_mix.alpha"
EXPERIMENT = "lungsrad-earlier"  # conftest.tpe_sweep's


@pytest.fixture(scope="module")
def studied(local_ray, tpe_sweep):
    """The shared finished 3-trial TPE smoke sweep (conftest.tpe_sweep)."""
    return tpe_sweep


def _rounded(*numbers: float) -> tuple[float, ...]:
    return tuple(round(number, 9) for number in numbers)


def _study(outcome) -> optuna.Study:
    state = json.loads((outcome.folder / "sweep.json").read_text())
    storage = sqlite_uri(outcome.folder.parents[1] / STUDY_FILE)
    return optuna.load_study(study_name=state[TAG_STUDY_NAME], storage=storage)


def test_the_study_holds_one_finished_trial_per_child_run_with_its_value(studied) -> None:
    space, outcome, _ = studied
    study = _study(outcome)
    runs = child_runs(outcome.tracking.uri, EXPERIMENT, outcome.parent_run_id)
    assert len(runs) == 3 and {run.info.status for run in runs} == {"FINISHED"}
    assert len(study.trials) == len(runs)
    assert {trial.state for trial in study.trials} == {optuna.trial.TrialState.COMPLETE}
    best = best_metric_name(space.metric)
    from_study = sorted(
        _rounded(trial.params[TEMPERATURE], trial.params[ALPHA], trial.value)
        for trial in study.trials
    )
    from_mlflow = sorted(
        _rounded(
            float(json.loads(run.data.tags[TAG_VALUES])[TEMPERATURE]),
            float(json.loads(run.data.tags[TAG_VALUES])[ALPHA]),
            run.data.metrics[best],
        )
        for run in runs
    )
    assert from_study == from_mlflow


def test_the_study_is_named_after_the_sweep_and_tied_to_its_parent_run(studied) -> None:
    space, outcome, console = studied
    state = json.loads((outcome.folder / "sweep.json").read_text())
    study = _study(outcome)
    assert study.study_name == study_name(space.name, state["sweep_id"])
    assert study.user_attrs[ATTR_SWEEP_ID] == state["sweep_id"]
    assert study.user_attrs[ATTR_PARENT_RUN_ID] == outcome.parent_run_id
    assert study.user_attrs[ATTR_SPACE_FILE] == str(space.path)
    parent = outcome.tracking.client().get_run(outcome.parent_run_id)
    storage = sqlite_uri(outcome.folder.parents[1] / STUDY_FILE)
    assert parent.data.tags[TAG_STUDY_NAME] == study.study_name
    assert parent.data.tags[TAG_STUDY_STORAGE] == storage
    assert parent.data.params[TAG_STUDY_NAME] == study.study_name
    assert f"see it with: optuna-dashboard {storage}" in console


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nosuchdialect://host/db", "nosuchdialect://host/db"),
        ("postgresql://lungsrad:s3cretpw@127.0.0.1:1/optuna", "postgresql://***@127.0.0.1:1"),
    ],
)
def test_a_storage_that_cannot_be_opened_is_refused_in_one_line(
    write_space, tmp_path: Path, capsys, url: str, shown: str
) -> None:
    space = write_space(
        tmp_path, "badstorage", parameters={ALPHA: {"choice": [0.5, 2.0]}}, search="tpe"
    )
    root = tmp_path / "runs"
    status = main(["--space", str(space), "--output-root", str(root), "--optuna-storage", url])
    captured = capsys.readouterr()
    assert status == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "--optuna-storage" in lines[0] and shown in lines[0], lines
    assert "s3cretpw" not in captured.err + captured.out
    assert "Traceback" not in captured.err
    assert not (root / "ray_results").exists() or not any((root / "ray_results").iterdir())


# -- PostgreSQL ---------------------------------------------------------------------------------

PG_PASSWORD = "pg-s3cret"


@pytest.fixture(scope="module")
def postgresql_url(postgres) -> str:
    """A database of the module's own PostgreSQL (tests/postgres.py); its URL carries a password
    (the cluster trusts 127.0.0.1, so any is accepted) that must never be shown."""
    url = postgres.create_database("optuna")
    assert "lungsrad@" in url, url
    return url.replace("lungsrad@", f"lungsrad:{PG_PASSWORD}@", 1)


def test_a_postgresql_storage_holds_the_study_and_a_restored_searcher_adds_no_trial(
    postgresql_url: str, tmp_path: Path
) -> None:
    """The study in PostgreSQL through Ray's OptunaSearch as the sweep builds it; a searcher
    saved and restored (what --resume does) tells its running trial once, asks no new one."""
    from ray.tune.search.optuna import OptunaSearch

    study = open_sweep_study(postgresql_url, sweep="pg", sweep_id="0a1b2c3d")
    assert PG_PASSWORD not in study.shown_storage and PG_PASSWORD not in str(study.tags())
    create_study(study, directions=["max"], attributes={ATTR_SWEEP_ID: "0a1b2c3d"})
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0), **searcher_arguments(study))
    searcher.set_search_properties("score", "max", {"x": tune.uniform(0.0, 1.0)})
    searcher.suggest("t1")
    searcher.on_trial_complete("t1", {"score": 1.0})
    searcher.suggest("t2")
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = OptunaSearch()
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("t2", {"score": 2.0})
    loaded = optuna.load_study(study_name=study.name, storage=postgresql_url)
    assert loaded.user_attrs[ATTR_SWEEP_ID] == "0a1b2c3d"
    assert [trial.state for trial in loaded.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [trial.value for trial in loaded.trials] == [1.0, 2.0]
