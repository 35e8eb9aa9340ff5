"""The driver's MLflow writer (`tuning.callbacks.MlflowLogger`) against a real SQLite MLflow store,
fed the events and results Tune hands it: a trial's run with params, config, facts as tags,
per-epoch metrics and checkpoint artifacts; a retried trial and a resumed driver continuing the
same run (attempts, previous failure, no epoch logged twice); a diverged trial FAILED with its
reason. The trial objects stand in for Tune's (only the attributes the callback reads).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sweep_helpers import write_tiny_space

from lungsrad.checkpoint_format import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION
from lungsrad.metrics import EPOCH, REPORT_PREFIX, SELECTION_SCORE, prediction_metrics
from lungsrad.training.checkpoint_files import CHECKPOINT_FILE, save_atomic
from mlflow_tracking.artifacts import CURVES_PNG, HISTORY_CSV
from mlflow_tracking.run_writer import RunTracker
from mlflow_tracking.store import open_experiment
from mlflow_tracking.tags import (
    NOT_DEGENERATE,
    PARENT_RUN_TAG,
    TAG_BEST_EPOCH,
    TAG_DEGENERATE,
    TAG_DEVICE,
    TAG_FAILURE,
    TAG_PREVIOUS_FAILURE,
    TAG_RESUMED_FROM_EPOCH,
    TAG_STARTS,
    TAG_TRIAL_ID,
    TAG_WORKER_PID,
)
from mlflow_tracking.uri import sqlite_uri
from tuning.callbacks import MlflowLogger
from tuning.result_keys import ARTIFACTS_KEY, FACTS_KEY, FAILURE_KEY, TIMING_TRIAL, TRAIN_SECONDS
from tuning.search_space import SearchSpace, load_search_space
from tuning.sweep_tracking import ResolvedTrials, SweepTracking

pytestmark = pytest.mark.mlflow
ALPHA = "method.patch_mix.alpha"


@dataclass
class StandInTrial:
    """The attributes of ray.tune's Trial that MlflowLogger reads."""

    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)
    checkpoint: Any = None
    error_file: str | None = None

    def __str__(self) -> str:
        return f"train_trial_{self.trial_id}"


@pytest.fixture
def space(tmp_path: Path) -> SearchSpace:
    path = write_tiny_space(
        tmp_path / "logged.yaml",
        data=tmp_path / "data",
        parameters={ALPHA: {"grid": [0.5]}},
        search="grid",
    )
    return load_search_space(path)


@pytest.fixture
def sweep(space: SearchSpace, tmp_path: Path) -> tuple[Any, str, SweepTracking]:
    """A SQLite store, a parent run, and the driver's tracking of them."""
    target = open_experiment(sqlite_uri(tmp_path / "mlflow.db"), "logged")
    parent = RunTracker(target, run_name="parent")
    assert parent.flush(force=True)
    return target, str(parent.run_id), _tracking(space, target, str(parent.run_id), tmp_path)


def _tracking(space: SearchSpace, target: Any, parent_run_id: str, tmp_path: Path) -> SweepTracking:
    return SweepTracking(
        target,
        parent_run_id,
        role="trial",
        git_commit="abc",
        staging=tmp_path / "staging",
        resolved=ResolvedTrials(space),
    )


def _result(epoch: int, *, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {EPOCH: epoch, SELECTION_SCORE: 40.0 + epoch, "time_this_iter_s": 1.0}
    if facts is not None:
        result[FACTS_KEY] = json.dumps(facts)
    return result


def _checkpoint(folder: Path, epochs: int) -> Any:
    from ray import tune

    history = [{EPOCH: e, SELECTION_SCORE: 40.0 + e} for e in range(1, epochs + 1)]
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "history": history,
        "best": {"epoch": epochs, "confusion": [[1, 0], [0, 1]]},
        "train_seconds": 2.5,
    }
    save_atomic(payload, folder / CHECKPOINT_FILE)
    return tune.Checkpoint.from_directory(str(folder))


def _child(target: Any, parent_run_id: str) -> Any:
    (run,) = target.client().search_runs(
        [target.experiment_id], filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'"
    )
    return run


def _steps(target: Any, run: Any, key: str) -> list[int]:
    return sorted(
        metric.step for metric in target.client().get_metric_history(run.info.run_id, key)
    )


def _started_trial(
    space: SearchSpace, tracking: SweepTracking, tmp_path: Path, trial_id: str, error: str
) -> tuple[MlflowLogger, StandInTrial]:
    """A logger that saw the start of a trial whose error file (read on failure) says `error`."""
    error_file = tmp_path / f"{trial_id}_error.txt"
    error_file.write_text(error)
    logger = MlflowLogger(space, tracking)
    trial = StandInTrial(trial_id, {ALPHA: 0.5, "seed": 0}, error_file=str(error_file))
    logger.on_trial_start(0, [], trial)
    return logger, trial


def test_a_trial_run_gets_params_facts_epochs_and_checkpoint_artifacts(
    space: SearchSpace, sweep: tuple[Any, str, SweepTracking], tmp_path: Path
) -> None:
    target, parent_run_id, tracking = sweep
    logger = MlflowLogger(space, tracking)
    trial = StandInTrial("t_00000", {ALPHA: 0.5, "seed": 0})
    logger.on_trial_start(0, [], trial)
    facts = {"device": "cpu", "worker_pid": 4242, "resumed_from_epoch": 0, "num_parameters": 7}
    logger.on_trial_result(0, [], trial, _result(1, facts=facts))
    final = {**_result(2), TIMING_TRIAL: 3.0}
    logger.on_trial_result(0, [], trial, final)
    trial.last_result, trial.checkpoint = final, _checkpoint(tmp_path / "checkpoint", 2)
    logger.on_trial_complete(0, [], trial)

    run = _child(target, parent_run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert run.info.status == "FINISHED"
    assert tags[TAG_TRIAL_ID] == "t_00000" and tags[TAG_STARTS] == "1"
    assert (tags[TAG_DEVICE], tags[TAG_WORKER_PID], tags[TAG_RESUMED_FROM_EPOCH]) == (
        "cpu",
        "4242",
        "0",
    )
    assert tags[TAG_BEST_EPOCH] == "2" and tags[TAG_DEGENERATE] == NOT_DEGENERATE
    assert params[ALPHA] == "0.5" and params["run.num_parameters"] == "7"
    assert "time_this_iter_s" not in metrics  # Tune's own keys are not metrics
    assert metrics[TIMING_TRIAL] == 3.0 and metrics[TRAIN_SECONDS] == 2.5
    assert _steps(target, run, SELECTION_SCORE) == [1, 2]
    artifacts = {item.path for item in target.client().list_artifacts(run.info.run_id)}
    assert {"config.yaml", CURVES_PNG, HISTORY_CSV} <= artifacts


def test_a_retried_trial_and_a_resumed_driver_continue_the_same_run(
    space: SearchSpace, sweep: tuple[Any, str, SweepTracking], tmp_path: Path
) -> None:
    target, parent_run_id, tracking = sweep
    error = "Traceback ...\nray.exceptions.ActorDiedError: the worker died\n"
    logger, trial = _started_trial(space, tracking, tmp_path, "t_00001", error)
    logger.on_trial_result(0, [], trial, _result(1))
    logger.on_trial_recover(0, [], trial)
    assert "the worker died" in _child(target, parent_run_id).data.tags[TAG_FAILURE]
    logger.on_trial_start(0, [], trial)
    logger.on_trial_result(0, [], trial, _result(1))  # epoch 1 again: not logged twice
    logger.on_trial_result(0, [], trial, _result(2))
    tags = _child(target, parent_run_id).data.tags
    assert tags[TAG_STARTS] == "2" and TAG_FAILURE not in tags
    assert "the worker died" in tags[TAG_PREVIOUS_FAILURE]

    # A new driver process (--resume): the logger restored from the experiment state is bound to
    # the new driver's tracking.
    restored = pickle.loads(pickle.dumps(logger))
    assert restored.tracking is None
    logger = restored
    logger.bind(_tracking(space, target, parent_run_id, tmp_path))
    logger.on_trial_start(0, [], trial)
    logger.on_trial_result(0, [], trial, _result(2))
    logger.on_trial_result(0, [], trial, _result(3))
    run = _child(target, parent_run_id)
    assert run.data.tags[TAG_STARTS] == "3"
    assert _steps(target, run, SELECTION_SCORE) == [1, 2, 3]


def test_a_diverged_trial_is_failed_with_its_reason(
    space: SearchSpace, sweep: tuple[Any, str, SweepTracking], tmp_path: Path
) -> None:
    target, parent_run_id, tracking = sweep
    error = "NonFiniteLossError: non-finite loss: training loss is not finite\n"
    logger, trial = _started_trial(space, tracking, tmp_path, "t_00002", error)
    failure = {EPOCH: 0, FAILURE_KEY: "non-finite loss: training loss is not finite"}
    logger.on_trial_result(0, [], trial, failure)
    logger.on_trial_error(0, [], trial)
    run = _child(target, parent_run_id)
    assert run.info.status == "FAILED"
    assert "not finite" in run.data.tags[TAG_FAILURE]
    assert _steps(target, run, EPOCH) == []  # the failure report is no epoch


def test_a_degenerate_trial_is_tagged_with_the_class_it_predicts(
    space: SearchSpace, sweep: tuple[Any, str, SweepTracking], tmp_path: Path
) -> None:
    target, parent_run_id, tracking = sweep
    logger = MlflowLogger(space, tracking)
    trial = StandInTrial("t_00003", {ALPHA: 0.5, "seed": 0})
    logger.on_trial_start(0, [], trial)
    every_cycle_both = [[0, 0, 0, 60], [0, 0, 0, 30], [0, 0, 0, 20], [0, 0, 0, 0]]
    final = {**_result(2), **prediction_metrics(REPORT_PREFIX, np.array(every_cycle_both))}
    logger.on_trial_result(0, [], trial, final)
    trial.last_result, trial.checkpoint = final, _checkpoint(tmp_path / "checkpoint", 2)
    logger.on_trial_complete(0, [], trial)
    run = _child(target, parent_run_id)
    # Se is 0 here (no 'both' cycle in this test split): once read as "predicts 'normal'".
    assert run.data.tags[TAG_DEGENERATE] == "degenerate: predicts only 'both'"
    assert run.data.metrics["report/predicted/both"] == 100.0


def test_a_finished_trial_sends_its_artifacts_and_the_driver_reads_no_checkpoint(
    space: SearchSpace, sweep: tuple[Any, str, SweepTracking]
) -> None:
    target, parent_run_id, tracking = sweep
    logger = MlflowLogger(space, tracking)
    trial = StandInTrial("t_00004", {ALPHA: 0.5, "seed": 0})
    logger.on_trial_start(0, [], trial)
    sent = {
        "history": [{EPOCH: e, SELECTION_SCORE: 40.0 + e} for e in (1, 2)],
        "confusion": [[1, 0], [0, 1]],
        "device_confusion": {"Meditron": [[1, 0], [0, 0]]},
        "best_epoch": 2,
        "train_seconds": 2.5,
    }
    final = {**_result(2), ARTIFACTS_KEY: json.dumps(sent)}
    logger.on_trial_result(0, [], trial, final)
    trial.last_result, trial.checkpoint = final, None  # no checkpoint to read
    logger.on_trial_complete(0, [], trial)
    run = _child(target, parent_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_BEST_EPOCH] == "2" and run.data.metrics[TRAIN_SECONDS] == 2.5
    assert ARTIFACTS_KEY not in run.data.metrics and ARTIFACTS_KEY not in run.data.params
    artifacts = {item.path for item in target.client().list_artifacts(run.info.run_id)}
    assert {"config.yaml", CURVES_PNG, HISTORY_CSV, "confusion_by_device"} <= artifacts
