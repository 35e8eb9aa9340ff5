"""A small one-at-a-time sweep (2 points x 2 seeds, 2 epochs) on a real local Ray with a real
SQLite MLflow store: one child run per trial with metric history, the parent/child link, tags,
params and artifacts, the best-config export, the sensitivity report, and a --resume of the
finished sweep that re-runs nothing and duplicates nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from lungsrad.config import flatten_config, load_config
from lungsrad.data.features import build_feature_set
from lungsrad.metrics import EPOCH, REPORT_SCORE, SELECTION_SCORE, TRAIN_LEARNING_RATE
from mlflow_tracking.report import build_report
from mlflow_tracking.tags import (
    TAG_DATA_FINGERPRINT,
    TAG_DEVICE,
    TAG_DEVICE_REASON,
    TAG_GIT_COMMIT,
    TAG_NODE_ID,
    TAG_NODE_IP,
    TAG_ROLE,
    TAG_SCAN_BACKEND,
    TAG_STOPPED_EARLY,
    TAG_TRIAL_ID,
    TAG_VALUES,
)
from mlflow_tracking.uri import sqlite_uri
from tests.cli_errors import assert_one_line_error
from tuning.cost import (
    COST_ATTEMPTS,
    COST_DEVICE_HOURS,
    COST_DEVICE_SECONDS,
    COST_EPOCHS_MAX,
    COST_EPOCHS_RUN,
    COST_STOPPED_FULL_HOURS,
    COST_STOPPED_SAVED_HOURS,
)
from tuning.driver import run_sweep
from tuning.result_keys import FACTS_KEY, TIMING_TRIAL, TRAIN_SECONDS, best_metric_name
from tuning.results import BEST_CONFIG_FILE, SUMMARY_FILE
from tuning.search_space import load_search_space
from tuning.settings import DriverSettings

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

from sweep_helpers import REPO, child_runs, mlflow_client  # noqa: E402

EXPERIMENT = "test-sweep-local"
TEMPERATURE = "method.patch_mix.temperature"


@pytest.fixture(scope="module")
def sweep(local_ray, write_space, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep_local")
    space_path = write_space(
        folder,
        "oat",
        base_overrides={TEMPERATURE: 0.06},
        parameters={TEMPERATURE: {"grid": [0.06, 0.2]}},
        search="one_at_a_time",
        seeds=[0, 1],
        resources={"cpu": 1},
    )
    space = load_search_space(space_path)
    settings = DriverSettings(
        output_root=folder / "runs",
        storage_path=folder / "runs" / "ray_results",
        tracking_uri=sqlite_uri(folder / "runs" / "mlflow.db"),
        experiment=EXPERIMENT,
        ray_address=None,
    )
    outcome = run_sweep(space, settings)
    return space, settings, outcome


def test_every_trial_finished_and_best_was_exported(sweep) -> None:
    space, _, outcome = sweep
    assert len(outcome.outcomes) == 4
    assert all(o.status == "done" for o in outcome.outcomes), outcome.outcomes
    assert outcome.best is not None and len(outcome.best.members) == 2
    assert outcome.best_config_path == outcome.folder / BEST_CONFIG_FILE
    assert (outcome.folder / SUMMARY_FILE).read_text().startswith("# Sweep `oat`")


def test_one_child_run_per_trial_with_metric_history(sweep) -> None:
    _, settings, outcome = sweep
    runs = child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    trial_ids = sorted(run.data.tags[TAG_TRIAL_ID] for run in runs)
    assert trial_ids == sorted(o.trial_id for o in outcome.outcomes)
    client = mlflow_client(settings.tracking_uri)
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, SELECTION_SCORE)
        assert sorted(metric.step for metric in history) == [1, 2]
        epochs = client.get_metric_history(run.info.run_id, EPOCH)
        assert [metric.value for metric in sorted(epochs, key=lambda m: m.step)] == [1.0, 2.0]
        assert REPORT_SCORE in run.data.metrics
        assert run.data.metrics[TIMING_TRIAL] >= run.data.metrics[TRAIN_SECONDS] > 0


def test_trial_processes_never_import_mlflow(sweep) -> None:
    """Trials report to Tune only; the driver writes MLflow. Each trial process states in its
    reported facts whether `mlflow` is in its sys.modules (checked after training)."""
    _, _, outcome = sweep
    facts = []
    for result_file in outcome.folder.glob("trial_*/result.json"):
        for line in result_file.read_text().splitlines():
            if FACTS_KEY in json.loads(line):
                facts.append(json.loads(json.loads(line)[FACTS_KEY]))
    assert len(facts) >= 2 * len(outcome.outcomes)  # first and last result of each trial
    assert all(fact["trial_imports_mlflow"] is False for fact in facts), facts


def test_parent_child_link_and_parent_contents(sweep) -> None:
    space, settings, outcome = sweep
    client = mlflow_client(settings.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_ROLE] == "sweep"
    assert parent.data.params["sweep.search"] == "one_at_a_time"
    assert json.loads(parent.data.params["sweep.parameters"]) == [TEMPERATURE]
    artifacts = {item.path for item in client.list_artifacts(outcome.parent_run_id)}
    assert {BEST_CONFIG_FILE, SUMMARY_FILE, "search_space", "base_configs"} <= artifacts
    for run in child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id):
        assert run.data.tags["mlflow.parentRunId"] == outcome.parent_run_id
        assert run.info.experiment_id == parent.info.experiment_id


def test_trial_tags_params_and_artifacts(sweep) -> None:
    space, settings, outcome = sweep
    client = mlflow_client(settings.tracking_uri)
    fingerprint = build_feature_set(space.base_config.data, show_progress=False).fingerprint
    (node,) = ray.nodes()
    for run in child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id):
        tags, params = run.data.tags, run.data.params
        assert tags[TAG_DATA_FINGERPRINT] == fingerprint
        assert tags[TAG_DEVICE] == "cpu"
        assert "asked Ray for no GPU" in tags[TAG_DEVICE_REASON]
        assert tags[TAG_SCAN_BACKEND] == "chunked"
        assert (tags[TAG_NODE_ID], tags[TAG_NODE_IP]) == (
            node["NodeID"],
            node["NodeManagerAddress"],
        )
        assert tags[TAG_GIT_COMMIT] != ""
        values = json.loads(tags[TAG_VALUES])
        assert params[TEMPERATURE] == ("0.2" if values else "0.06")
        assert params["train.seed"] in ("0", "1")
        assert set(flatten_config(space.base_config)) <= set(params)
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {
            "config.yaml",
            "metrics_history.csv",
            "curves.png",
            "confusion_matrix.csv",
            "confusion_matrix.png",
        } <= artifacts


def test_best_config_is_the_best_mean_over_seeds(sweep) -> None:
    space, settings, outcome = sweep
    best_name = best_metric_name(space.metric)
    by_temperature: dict[str, list[float]] = {}
    for run in child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id):
        temperature = run.data.params[TEMPERATURE]
        by_temperature.setdefault(temperature, []).append(run.data.metrics[best_name])
    means = {t: sum(v) / len(v) for t, v in by_temperature.items()}
    winner = max(means, key=lambda t: (means[t], t == "0.06"))
    exported = load_config(outcome.best_config_path)
    assert str(exported.method.patch_mix.temperature) == winner
    assert exported == outcome.best.config
    assert exported.data.root == space.base_config.data.root


def test_sensitivity_report_from_mlflow(sweep, tmp_path: Path) -> None:
    _, settings, outcome = sweep
    client = mlflow_client(settings.tracking_uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    report = build_report(
        client, experiment_id=experiment_id, parent_run_id=None, out_dir=tmp_path / "report"
    )
    assert report.parent_run_id == outcome.parent_run_id
    assert [path.name for path in report.plots] == [f"sensitivity_{TEMPERATURE}.png"]
    assert "| 0.06 (base) | 2 |" in report.markdown and "| 0.2 | 2 |" in report.markdown
    logged = {item.path for item in client.list_artifacts(outcome.parent_run_id, "report")}
    assert f"report/sensitivity_{TEMPERATURE}.png" in logged
    completed = subprocess.run(
        [
            sys.executable, "-m", "mlflow_tracking.report",
            "--experiment", EXPERIMENT,
            "--tracking-uri", settings.tracking_uri,
            "--out", str(tmp_path / "cli"),
            "--no-log",
        ],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "cli" / "sensitivity.md").is_file()


def test_resume_of_a_finished_sweep_reruns_and_duplicates_nothing(sweep) -> None:
    space, settings, outcome = sweep
    before = child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    again = run_sweep(space, DriverSettings(**{**settings.__dict__, "resume": True}))
    assert again.folder == outcome.folder and again.parent_run_id == outcome.parent_run_id
    after = child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id)
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in before)
    assert again.best_config_path == outcome.best_config_path  # same content, same file
    client = mlflow_client(settings.tracking_uri)
    for run in after:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, SELECTION_SCORE)]
        assert sorted(steps) == [1, 2]


def test_final_trains_five_seeds_and_prints_table1(sweep, tmp_path, capsys) -> None:
    from lungsrad.config import apply_overrides, save_config
    from lungsrad.metrics import REPORT_SCORE_2CLASS
    from tuning import final

    _, settings, outcome = sweep
    best = apply_overrides(load_config(outcome.best_config_path), {"train.num_epochs": 1})
    config_path = tmp_path / "best_config.yaml"
    save_config(best, config_path)
    code = final.main(
        [
            "--config", str(config_path),
            "--seeds", "0", "1", "2", "3", "4",
            "--gpu", "0",
            "--output-root", str(tmp_path / "final"),
            "--tracking-uri", settings.tracking_uri,
            "--experiment", "test-final",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "| 4-class |" in printed and "| 2-class |" in printed and " ± " in printed
    (folder,) = (tmp_path / "final" / "ray_results").iterdir()
    table = (folder / final.TABLE1_FILE).read_text()
    assert table in printed
    parent_id = json.loads((folder / "sweep.json").read_text())["parent_run_id"]
    runs = child_runs(settings.tracking_uri, "test-final", parent_id)
    assert sorted(int(run.data.params["train.seed"]) for run in runs) == [0, 1, 2, 3, 4]
    assert all(run.info.status == "FINISHED" for run in runs)
    client = mlflow_client(settings.tracking_uri)
    parent = client.get_run(parent_id)
    assert parent.data.tags[TAG_ROLE] == "final" and parent.info.status == "FINISHED"
    scores = [run.data.metrics[REPORT_SCORE] for run in runs]
    mean = sum(scores) / 5
    assert abs(parent.data.metrics[f"{REPORT_SCORE}_mean"] - mean) < 1e-6
    assert f"{REPORT_SCORE_2CLASS}_std" in parent.data.metrics
    assert final.TABLE1_FILE in {item.path for item in client.list_artifacts(parent_id)}


def test_final_refuses_a_config_from_another_code_version(sweep, tmp_path, capsys) -> None:
    from tuning import final

    _, _, outcome = sweep
    text = outcome.best_config_path.read_text().replace("config_version: 2", "config_version: 3")
    old = tmp_path / "old_best_config.yaml"
    old.write_text(text)
    code = final.main(["--config", str(old), "--output-root", str(tmp_path / "x"), "--gpu", "0"])
    assert_one_line_error(
        (code, capsys.readouterr().err),
        "config_version is 3 but this lungsrad reads versions 1..2",
        str(old),
    )
    assert not (tmp_path / "x").exists()


def test_asha_stops_a_trial_early_and_its_run_is_closed_with_artifacts(
    local_ray, write_space, tmp_path
) -> None:
    # The learning rate as the metric makes ASHA's decision certain: trials run one at a time,
    # the first one sets the rung, the second reports a lower value at epoch 1 and is stopped.
    space = load_search_space(
        write_space(
            tmp_path,
            "asha",
            parameters={"train.learning_rate": {"grid": [1.0e-3, 1.0e-4]}},
            search="grid",
            scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2, "max_t": 2},
            metric=TRAIN_LEARNING_RATE,
            max_concurrent_trials=1,
            resources={"cpu": 1},
        )
    )
    settings = DriverSettings(
        output_root=tmp_path / "runs",
        storage_path=tmp_path / "runs" / "ray_results",
        tracking_uri=sqlite_uri(tmp_path / "runs" / "mlflow.db"),
        experiment="test-asha",
        ray_address=None,
    )
    outcome = run_sweep(space, settings)
    assert [o.epochs for o in outcome.outcomes] == [2, 1]
    assert load_config(outcome.best_config_path).train.learning_rate == 1.0e-3
    client = mlflow_client(settings.tracking_uri)
    runs = sorted(
        child_runs(settings.tracking_uri, "test-asha", outcome.parent_run_id),
        key=lambda run: run.info.start_time,
    )
    assert [run.data.tags.get(TAG_STOPPED_EARLY) for run in runs] == [None, "true"]
    for run in runs:
        assert run.info.status == "FINISHED"
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"curves.png", "confusion_matrix.csv", "metrics_history.csv"} <= artifacts
        assert run.data.metrics[TRAIN_SECONDS] > 0
    # Cost: the stopped trial ran 1 of 2 epochs; a full-length run would have cost twice its
    # device time, and the parent run says what the scheduler saved.
    stopped = runs[1].data.metrics
    assert stopped[COST_EPOCHS_RUN] == 1 and stopped[COST_EPOCHS_MAX] == 2
    assert stopped[COST_DEVICE_SECONDS] > 0 and stopped[COST_ATTEMPTS] == 1
    parent = client.get_run(outcome.parent_run_id).data.metrics
    saved_hours = stopped[COST_DEVICE_SECONDS] / 3600.0
    assert parent[COST_STOPPED_FULL_HOURS] == pytest.approx(2 * saved_hours)
    assert parent[COST_STOPPED_SAVED_HOURS] == pytest.approx(saved_hours)
    total = sum(run.data.metrics[COST_DEVICE_SECONDS] for run in runs) / 3600.0
    assert parent[COST_DEVICE_HOURS] == pytest.approx(total)
    assert outcome.cost.stopped_trials == 1
    summary = outcome.summary_path.read_text(encoding="utf-8")
    assert "## Cost" in summary and "saved by the scheduler" in summary


def test_final_over_folds_logs_devices_and_the_mean_over_folds(sweep, tmp_path, capsys) -> None:
    """`final.py --folds` on real Ray and MLflow: seeds x folds child runs tagged with their fold,
    per-device metrics and confusion artifacts, and the fold and device tables."""
    from lungsrad.config import apply_overrides, save_config
    from lungsrad.data.protocols import read_fold_list
    from lungsrad.metrics import REPORT_PREFIX, SCORE, SPLIT_TEST, device_metric_name
    from mlflow_tracking.artifacts import DEVICE_CONFUSION_FOLDER
    from tuning import final

    space, settings, outcome = sweep
    features = build_feature_set(space.base_config.data, show_progress=False)
    folds_of = read_fold_list()
    # Two folds that hold some (not all) of the synthetic patients: each has test cycles.
    present = sorted({folds_of[p] for p in features.patient_ids})
    folds = [f for f in present if {folds_of[p] for p in features.patient_ids} - {f}][:2]
    assert len(folds) == 2
    best = apply_overrides(load_config(outcome.best_config_path), {"train.num_epochs": 1})
    config_path = tmp_path / "best_config.yaml"
    save_config(best, config_path)
    code = final.main(
        [
            "--config", str(config_path),
            "--seeds", "0", "1",
            "--folds", *(str(f) for f in folds),
            "--gpu", "0",
            "--output-root", str(tmp_path / "final"),
            "--tracking-uri", settings.tracking_uri,
            "--experiment", "test-final-folds",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "foldwise protocol" in printed and "| **mean over folds** |" in printed
    assert "## Per recording device" in printed
    (folder,) = (tmp_path / "final" / "ray_results").iterdir()
    parent_id = json.loads((folder / "sweep.json").read_text())["parent_run_id"]
    runs = child_runs(settings.tracking_uri, "test-final-folds", parent_id)
    pairs = sorted(
        (int(r.data.params["train.seed"]), int(r.data.params["data.fold"])) for r in runs
    )
    assert pairs == sorted((s, f) for s in (0, 1) for f in folds)
    client = mlflow_client(settings.tracking_uri)
    for run in runs:
        assert json.loads(run.data.tags[TAG_VALUES]) == {"data.fold": run.data.params["data.fold"]}
        fold = int(run.data.params["data.fold"])
        tested = {
            name.rsplit("_", 1)[-1]
            for name, patient in zip(features.recordings, features.patient_ids, strict=True)
            if folds_of[patient] == fold
        }
        logged = {
            key.split("/")[2] for key in run.data.metrics if key.startswith(f"{SPLIT_TEST}/device/")
        }
        assert logged == tested  # exactly the devices with test cycles in this fold
        for device in tested:
            assert device_metric_name(REPORT_PREFIX, device, SCORE) in run.data.metrics
        artifacts = {
            item.path for item in client.list_artifacts(run.info.run_id, DEVICE_CONFUSION_FOLDER)
        }
        assert artifacts == {
            f"{DEVICE_CONFUSION_FOLDER}/{d}.{x}" for d in tested for x in "csv png".split()
        }
    parent = client.get_run(parent_id)
    assert f"{REPORT_SCORE}_over_folds_mean" in parent.data.metrics
