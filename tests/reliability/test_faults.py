"""Fault injection on a real local Ray with real MLflow (issue 6): a trial whose loss becomes NaN
stops, its MLflow run is FAILED with the reason, and the sweep goes on with the other trial; an
unreachable MLflow stops the driver before any trial. (Killed workers and drivers:
test_fault_recovery.py; a `mlflow server` and its PostgreSQL that go away mid-sweep and lose no
metric once they are back: test_postgres_store.py; the writer's buffering across an outage:
tests/mlflow_tracking/test_run_writer.py.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tuning"))
from sweep_helpers import (  # noqa: E402
    SWEEP,
    mlflow_client,
    write_tiny_space,
)

from lungsrad.data.synthetic import write_synthetic_dataset  # noqa: E402
from mlflow_tracking.server import free_port  # noqa: E402
from mlflow_tracking.tags import TAG_FAILURE  # noqa: E402
from mlflow_tracking.uri import sqlite_uri  # noqa: E402
from tests.cli_errors import assert_one_line_error
from tests.tcp_relay import TcpRelay  # noqa: E402

# AdamW moves every weight by about the learning rate: 1e30 overflows the activations at step 2
# (1e38 would instead overflow inside the optimizer, before the loss check).
DIVERGING_LEARNING_RATE = 1.0e30


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
def test_nan_trial_is_failed_with_its_reason_and_the_sweep_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_recordings=8, seed=0)
    space = write_tiny_space(
        tmp_path / "nan_sweep.yaml",
        data=data,
        base={"train": {"num_epochs": 1, "max_steps_per_epoch": 2}},
        parameters={"train.learning_rate": {"grid": [1.0e-3, DIVERGING_LEARNING_RATE]}},
        search="grid",
        max_failures=1,
    )
    root = tmp_path / "runs"
    completed = subprocess.run(
        [sys.executable, str(SWEEP), "--space", str(space)] + ["--output-root", str(root)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=500,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "2 trials, 1 done, 1 failed" in completed.stdout, output[-4000:]

    client = mlflow_client(sqlite_uri(root / "mlflow.db"))
    experiment = client.get_experiment_by_name("lungsrad-nan_sweep")
    runs = client.search_runs([experiment.experiment_id])
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == 2, [run.data.tags for run in runs]
    by_rate = {float(run.data.params["train.learning_rate"]): run for run in children}
    diverged = by_rate[DIVERGING_LEARNING_RATE]
    assert diverged.info.status == "FAILED"
    assert "not finite" in diverged.data.tags.get(TAG_FAILURE, ""), diverged.data.tags
    assert by_rate[1.0e-3].info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.mlflow
@pytest.mark.parametrize("server", ["refusing", "dropping"])
def test_an_unreachable_mlflow_stops_the_sweep_before_any_trial(
    tmp_path: Path, server: str
) -> None:
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_recordings=8, seed=0)
    space = write_tiny_space(
        tmp_path / "no_mlflow.yaml",
        data=data,
        parameters={"method.patch_mix.alpha": {"grid": [1.0]}},
        search="grid",
    )
    # Nothing listens on the port (connections refused), or a port that accepts and drops each
    # connection (a server that hangs up), which also counts how often the driver tried.
    down = TcpRelay() if server == "dropping" else None
    uri = down.uri if down is not None else f"http://127.0.0.1:{free_port()}"
    root = tmp_path / "runs"
    try:
        completed = subprocess.run(
            [sys.executable, str(SWEEP), "--space", str(space), "--tracking-uri", uri]
            + ["--output-root", str(root)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
    finally:
        if down is not None:
            down.close()
    report = f"exit {completed.returncode}\n{completed.stderr}\n{completed.stdout}"
    assert_one_line_error(completed, uri, "not reachable")
    assert "Traceback" not in completed.stderr
    # Stopped before Ray, features or any trial: no Tune folder, and no Ray started.
    assert not (root / "ray_results").exists(), report
    assert "local Ray" not in completed.stdout, report
    if down is not None:
        assert down.dropped == 1, f"tried {down.dropped} times: noticed only after retrying"
