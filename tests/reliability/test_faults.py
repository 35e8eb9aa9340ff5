"""Fault injection on a real local Ray with real MLflow (issue 6): a trial whose loss becomes NaN
stops, its MLflow run is FAILED with the reason, and the sweep goes on with the other trial.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tuning"))
from sweep_helpers import TINY_BASE, mlflow_client  # noqa: E402

from lungsrad.data.synthetic import write_synthetic_dataset  # noqa: E402
from mlflow_tracking.tracker import TAG_FAILURE, sqlite_uri  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# AdamW moves every weight by about the learning rate: 1e30 overflows the activations at step 2
# (1e38 would instead overflow inside the optimizer, before the loss check).
DIVERGING_LEARNING_RATE = 1.0e30


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
def test_nan_trial_is_failed_with_its_reason_and_the_sweep_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_recordings=8, seed=0)
    base = json.loads(json.dumps(TINY_BASE))
    base["name"] = "nan_sweep"
    base["data"].update({"root": str(data), "cache_dir": str(tmp_path / "cache")})
    base["train"].update({"num_epochs": 1, "max_steps_per_epoch": 2})
    space = tmp_path / "nan_sweep.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "name": "nan_sweep",
                "base_overrides": base,
                "parameters": {"train.learning_rate": {"grid": [1.0e-3, DIVERGING_LEARNING_RATE]}},
                "search": "grid",
                "max_failures": 1,
            }
        ),
        encoding="utf-8",
    )
    root = tmp_path / "runs"
    completed = subprocess.run(
        [sys.executable, str(REPO / "tuning" / "sweep.py"), "--space", str(space)]
        + ["--output-root", str(root)],
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
