"""Sweeps started at the same moment against one output root (issue 12): each gets its own results
folder, parent run, child runs and metric history, whether MLflow is a fresh SQLite file or a
real `mlflow server`; a driver always starts its own local Ray, whatever stale
`ray_current_cluster` file Ray's temp folder holds; `--resume` never guesses between sweeps and
refuses a sweep whose driver still runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import SWEEP, SWEEP_TIMEOUT_S, mlflow_client, write_tiny_space

from lungsrad.data.synthetic import write_synthetic_dataset
from lungsrad.files import file_lock
from lungsrad.metrics import EPOCH
from mlflow_tracking.server import LocalTrackingServer, free_port
from mlflow_tracking.tags import PARENT_RUN_TAG, TAG_SWEEP_ID, TAG_TRIAL_ID
from mlflow_tracking.uri import sqlite_uri
from tuning.sweep_folder import DRIVER_LOCK_FILE, STATE_FILE

NAME = "together"
EXPERIMENT = f"lungsrad-{NAME}"
NUM_EPOCHS = 2


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("together_space")
    write_synthetic_dataset(folder / "data", num_recordings=8, seed=0)
    return write_tiny_space(
        folder / f"{NAME}.yaml",
        data=folder / "data",
        base={"train": {"num_epochs": NUM_EPOCHS}},
        parameters={"method.patch_mix.alpha": {"grid": [1.0]}},
        search="grid",
        resources={"cpu": 1},
    )


def _start_sweeps(
    space: Path, root: Path, count: int, *flags: str
) -> list[tuple[subprocess.Popen[str], Path]]:
    """`count` drivers started back to back, each with its own Ray temp folder holding a stale
    `ray_current_cluster` (the address of a Ray that is gone)."""
    started = []
    for _ in range(count):
        ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's unix sockets
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
        command = [sys.executable, str(SWEEP), "--space", str(space), "--output-root", str(root)]
        process = subprocess.Popen(
            [*command, *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=root.parent,
            env={**_environment(), "RAY_TMPDIR": str(ray_tmp)},
        )
        started.append((process, ray_tmp))
    return started


def _environment() -> dict[str, str]:
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    environment.pop("RAY_ADDRESS", None)
    return environment


def _outputs(started: list[tuple[subprocess.Popen[str], Path]]) -> list[str]:
    outputs = []
    try:
        for process, _ in started:
            output, _ = process.communicate(timeout=SWEEP_TIMEOUT_S)
            assert process.returncode == 0, output[-4000:]
            outputs.append(output)
    finally:
        for process, ray_tmp in started:
            if process.poll() is None:
                process.kill()
                process.communicate()
            shutil.rmtree(ray_tmp, ignore_errors=True)
    return outputs


def _assert_apart(root: Path, uri: str, outputs: list[str]) -> None:
    """One folder, parent run and child run (with every epoch) per sweep, none shared."""
    folders = sorted((root / "ray_results").glob(f"{NAME}_*"))
    assert len(folders) == len(outputs), folders
    for output in outputs:
        assert "local Ray at" in output, output[-4000:]  # its own Ray, not the stale address
        assert "1 trials, 1 done, 0 failed" in output, output[-4000:]
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parents = {run.info.run_id: run for run in runs if PARENT_RUN_TAG not in run.data.tags}
    assert len(parents) == len(folders) and len(runs) == 2 * len(folders)
    seen_trials = set()
    for folder in folders:
        state: dict[str, Any] = json.loads((folder / STATE_FILE).read_text())
        assert folder.name.endswith(state["sweep_id"])
        parent = parents[state["parent_run_id"]]
        assert parent.data.tags[TAG_SWEEP_ID] == state["sweep_id"]
        assert parent.info.status == "FINISHED"
        trial_dirs = sorted(folder.glob("trial_*"))
        assert len(trial_dirs) == 1 and len(list(folder.glob("experiment_state-*.json"))) == 1
        children = [run for run in runs if run.data.tags.get(PARENT_RUN_TAG) == parent.info.run_id]
        assert len(children) == 1
        child = children[0]
        assert trial_dirs[0].name == f"trial_{child.data.tags[TAG_TRIAL_ID]}"
        history = client.get_metric_history(child.info.run_id, EPOCH)
        assert sorted(metric.step for metric in history) == list(range(1, NUM_EPOCHS + 1))
        seen_trials.add(child.data.tags[TAG_TRIAL_ID])
        assert (folder / "summary.md").is_file() and (folder / "best_config.yaml").is_file()
    assert len(seen_trials) == len(folders)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
def test_three_sweeps_started_at_once_on_a_fresh_sqlite_root_stay_apart(
    space: Path, tmp_path: Path
) -> None:
    root = tmp_path / "runs"  # fresh: the three drivers create mlflow.db together
    outputs = _outputs(_start_sweeps(space, root, 3))
    _assert_apart(root, sqlite_uri(root / "mlflow.db"), outputs)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
def test_two_sweeps_started_at_once_against_one_mlflow_server_stay_apart(
    space: Path, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    with LocalTrackingServer(tmp_path / "mlflow") as server:
        outputs = _outputs(_start_sweeps(space, root, 2, "--tracking-uri", server.uri))
        _assert_apart(root, server.uri, outputs)


def _fake_sweep(storage: Path, sweep_id: str, uri: str) -> Path:
    """A sweep folder as a driver leaves it (sweep.json only)."""
    folder = storage / f"{NAME}_20260101-000000_{sweep_id}"
    folder.mkdir(parents=True)
    state = {"sweep": NAME, "sweep_id": sweep_id, "experiment": EXPERIMENT, "tracking_uri": uri}
    (folder / STATE_FILE).write_text(json.dumps(state))
    return folder


def _resume(space: Path, root: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SWEEP), "--space", str(space), "--output-root", str(root)]
        + ["--resume", *flags],
        capture_output=True,
        text=True,
        cwd=root.parent,
        env=_environment(),
        timeout=300,
    )


@pytest.mark.mlflow
def test_resume_never_guesses_between_sweeps_and_refuses_a_running_one(
    space: Path, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    uri = sqlite_uri(root / "mlflow.db")
    running = _fake_sweep(root / "ray_results", "aaaa1111", uri)
    _fake_sweep(root / "ray_results", "bbbb2222", uri)

    ambiguous = _resume(space, root)
    assert ambiguous.returncode == 2, ambiguous.stderr
    assert ambiguous.stderr.count("\n") == 1 and "Traceback" not in ambiguous.stderr
    assert "2 sweeps" in ambiguous.stderr and "aaaa1111" in ambiguous.stderr
    assert "bbbb2222" in ambiguous.stderr and "--resume SWEEP_ID" in ambiguous.stderr

    with file_lock(running / DRIVER_LOCK_FILE):  # as the running driver holds it
        refused = _resume(space, root, "aaaa1111")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "aaaa1111" in refused.stderr and "still running" in refused.stderr

    missing = _resume(space, root, "cccc3333")
    assert missing.returncode == 2 and "with id 'cccc3333'" in missing.stderr, missing.stderr
