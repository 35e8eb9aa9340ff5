"""benchmarks/sweep_soak.py trimmed for CI (issue 28): 30 trials with ASHA on a local Ray through
the real driver, against a `mlflow server` on the script's own PostgreSQL. Asserts counts (every
trial finished once with its metrics, a sample every 10 trials, rows that grow with the runs),
never times: the speed figures are the benchmark's, in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tuning"))
from sweep_helpers import kill_processes_mentioning  # noqa: E402

from mlflow_tracking.postgres import POSTGRES_BIN_GLOB, find_postgres_bin  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[2]
TRIALS = 30
EVERY = 10


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.mlflow
def test_a_trimmed_soak_on_postgres_finishes_every_trial_once(tmp_path: Path) -> None:
    if find_postgres_bin() is None:
        pytest.skip(f"PostgreSQL is not installed (no initdb in {POSTGRES_BIN_GLOB})")
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's unix sockets live there
    try:
        completed = subprocess.run(
            [
                sys.executable, str(REPOSITORY / "benchmarks" / "sweep_soak.py"),
                "--trials", str(TRIALS), "--every", str(EVERY), "--store", "postgres", "--json",
                "--output-root", str(tmp_path / "soak"),
            ],
            capture_output=True, text=True, cwd=REPOSITORY, timeout=1500,
            start_new_session=True,
            env={
                **os.environ,
                "RAY_TMPDIR": ray_tmp,
                "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])
                ),
            },
        )  # fmt: skip
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["store"] == "postgres" and result["trials"] == TRIALS
    assert result["completed"] == result["child_runs"] == result["distinct_trials"] == TRIALS
    assert result["all_completed"] is True
    samples = result["samples"]
    assert [sample["trials"] for sample in samples] == list(range(EVERY, TRIALS + 1, EVERY))
    for sample in samples:
        # The trials finished so far and the parent have runs; at most two more are running.
        assert sample["trials"] + 1 <= sample["rows"]["runs"] <= sample["trials"] + 3, sample
        assert sample["rows"]["metrics"] > 0 and sample["store_mb"] > 0 and sample["rss_mb"] > 0
    assert set(result["growth_per_100"]) >= {"rss_mb", "store_mb", "folder_mb", "overhead_s"}
    assert "verdict: driver RSS" in completed.stdout
