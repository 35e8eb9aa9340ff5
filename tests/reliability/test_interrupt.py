"""SIGINT and SIGTERM of a real sweep (issue 25): `tuning/sweep.py` runs as its own process with
its own local Ray and a SQLite MLflow store; once its first trial is done and the second has
reported an epoch, that trial's worker is held still (so it cannot finish, however fast the
machine) and the driver gets the signal. It must stop with 130 / 143, leave the parent run and
the unfinished child run KILLED, export nothing, and print the `--resume` command, which then
finishes the sweep and writes best_config.yaml (an earlier export kept as a partial one).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tuning"))
from sweep_helpers import (  # noqa: E402
    SWEEP_TIMEOUT_S,
    Held,
    SweepProcess,
    child_runs,
    kill_processes_mentioning,
    mlflow_client,
    reported_epochs,
    write_tiny_space,
)

from lungsrad.data.synthetic import write_synthetic_dataset  # noqa: E402
from mlflow_tracking.tags import PARENT_RUN_TAG, TAG_TRIAL_STATUS  # noqa: E402
from mlflow_tracking.uri import sqlite_uri  # noqa: E402
from tuning.result_keys import best_metric_name  # noqa: E402
from tuning.study import STUDY_FILE, TAG_STUDY_NAME  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow]

NAME = "interrupted"
EXPERIMENT = f"lungsrad-{NAME}"
STALE_EXPORT = "# an export of the interrupted sweep by an older version\nname: stale\n"


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("interrupt_space")
    data = folder / "data"
    write_synthetic_dataset(data, num_recordings=10, seed=0)
    return write_tiny_space(
        folder / f"{NAME}.yaml",
        data=data,
        # TPE: the resumed sweep must also continue its persistent Optuna study (issue 27).
        parameters={"method.patch_mix.temperature": {"loguniform": [0.05, 0.5]}},
        base={"train": {"num_epochs": 3}},
        search="tpe",
        num_samples=2,
        max_concurrent_trials=1,
        max_failures=1,
        resources={"cpu": 1},
    )


@pytest.fixture
def start(tmp_path: Path, space: Path) -> Iterator[Callable[..., SweepProcess]]:
    started: list[SweepProcess] = []

    def run(log: str, *extra: str) -> SweepProcess:
        process = SweepProcess(space, tmp_path / "runs", tmp_path / log, *extra)
        started.append(process)
        return process

    yield run
    for process in started:
        process.close()


def _sweep_folder(root: Path) -> Path:
    folders = sorted((root / "ray_results").glob(f"{NAME}_*"))
    assert len(folders) == 1, folders
    return folders[0]


def _trial_dirs(root: Path) -> list[Path]:
    return sorted((root / "ray_results").glob(f"{NAME}_*/trial_*"), key=lambda p: p.name)


def _interrupt(sweep: SweepProcess, root: Path, send: Callable[[int], None]) -> str:
    """Waits until trial 1 is done and trial 2 reported epoch 1, holds trial 2's worker, sends
    the signal (send(pid)) and waits for the driver to exit; its output."""

    def second_trial_reported() -> bool:
        dirs = _trial_dirs(root)
        return (
            len(re.findall(r"\] \S+ done in ", sweep.output())) == 1
            and len(dirs) == 2
            and bool(reported_epochs(dirs[1]))
        )

    sweep.wait_until(second_trial_reported, "the second trial's first epoch", 400, interval_s=0.01)
    with Held(*sweep.trial_workers()):
        send(sweep.process.pid)
        try:
            sweep.process.wait(timeout=SWEEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver did not stop:\n{sweep.output()[-4000:]}")
    return sweep.output()


def _resume_argv(output: str) -> list[str]:
    lines = [line for line in output.splitlines() if line.startswith("continue with: ")]
    assert len(lines) == 1, output[-4000:]
    argv = shlex.split(lines[0].removeprefix("continue with: "))
    assert argv[0] == "python" and argv[-2] == "--resume", argv
    return [sys.executable, *argv[1:]]


def _check_interrupted(root: Path, output: str, *, status: int, returncode: int) -> str:
    """Asserts what an interrupted sweep leaves; the sweep id."""
    assert returncode == status, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert "sweep finished" not in output and "best config:" not in output, output[-4000:]
    folder = _sweep_folder(root)
    assert not (folder / "best_config.yaml").exists()
    assert not (folder / "summary.md").exists()
    state = json.loads((folder / "sweep.json").read_text())
    assert state["interrupted"]["signal"] == signal.Signals(status - 128).name
    uri = sqlite_uri(root / "mlflow.db")
    client = mlflow_client(uri)
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "KILLED"
    children = child_runs(uri, EXPERIMENT, state["parent_run_id"])
    statuses = sorted(run.info.status for run in children)
    assert statuses == ["FINISHED", "KILLED"], statuses
    killed = next(run for run in children if run.info.status == "KILLED")
    assert killed.data.tags[TAG_TRIAL_STATUS] == "interrupted"
    assert _resume_argv(output)[-1] == state["sweep_id"]
    return state["sweep_id"]


def _resume(root: Path, output: str, log: Path) -> str:
    """Runs the printed --resume command (its own Ray temp dir, whatever it leaves stopped)."""
    ray_tmp = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: Ray's unix sockets live there
    try:
        completed = subprocess.run(
            _resume_argv(output),
            capture_output=True,
            text=True,
            cwd=root.parent,
            env={**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"},
            timeout=SWEEP_TIMEOUT_S,
            start_new_session=True,
        )
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    log.write_text(completed.stdout + completed.stderr)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    return completed.stdout


def _check_resumed(root: Path, output: str) -> None:
    assert "2 trials, 2 done, 0 failed" in output, output[-4000:]
    folder = _sweep_folder(root)
    assert f"best config: {folder / 'best_config.yaml'}" in output
    uri = sqlite_uri(root / "mlflow.db")
    client = mlflow_client(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    parents = [run for run in runs if PARENT_RUN_TAG not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(run.info.status for run in runs) == ["FINISHED"] * 3


def test_sigint_stops_the_sweep_and_resume_finishes_it(
    tmp_path: Path, start: Callable[..., SweepProcess]
) -> None:
    root = tmp_path / "runs"
    sweep = start("sweep.log")
    # Ctrl-C in a terminal signals the whole foreground process group.
    output = _interrupt(sweep, root, lambda pid: os.killpg(pid, signal.SIGINT))
    _check_interrupted(root, output, status=130, returncode=sweep.process.returncode)
    state = json.loads((_sweep_folder(root) / "sweep.json").read_text())
    storage = sqlite_uri(root / STUDY_FILE)
    interrupted = optuna.load_study(study_name=state[TAG_STUDY_NAME], storage=storage)
    assert len(interrupted.trials) == 2, interrupted.trials  # one finished, one cut short
    resumed = _resume(root, output, tmp_path / "resume.log")
    _check_resumed(root, resumed)
    assert list(_sweep_folder(root).glob("best_config.partial-*")) == []
    # The same study, continued: one finished Optuna trial per finished run, no duplicate.
    study = optuna.load_study(study_name=state[TAG_STUDY_NAME], storage=storage)
    runs = child_runs(sqlite_uri(root / "mlflow.db"), EXPERIMENT, state["parent_run_id"])
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    best = best_metric_name("selection/icbhi_score")
    assert sorted(trial.value for trial in study.trials) == pytest.approx(
        sorted(run.data.metrics[best] for run in runs)
    )


def test_sigterm_stops_the_sweep_and_resume_keeps_an_earlier_export_as_partial(
    tmp_path: Path, start: Callable[..., SweepProcess]
) -> None:
    root = tmp_path / "runs"
    sweep = start("sweep.log")
    output = _interrupt(sweep, root, lambda pid: os.kill(pid, signal.SIGTERM))
    _check_interrupted(root, output, status=143, returncode=sweep.process.returncode)
    # What an older version exported on an interrupt: the resumed answer must supersede it.
    folder = _sweep_folder(root)
    (folder / "best_config.yaml").write_text(STALE_EXPORT)
    resumed = _resume(root, output, tmp_path / "resume.log")
    _check_resumed(root, resumed)
    assert "name: stale" not in (folder / "best_config.yaml").read_text()
    kept = list(folder.glob("best_config.partial-*.yaml"))
    assert len(kept) == 1 and kept[0].read_text() == STALE_EXPORT
