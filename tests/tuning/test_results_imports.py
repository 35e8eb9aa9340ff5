"""Reading a finished sweep (tuning.results, tuning.compare, the MLflow readers) loads neither Ray
nor torch: result-key names live in the Ray-free tuning.result_keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "module", ["tuning.results", "tuning.compare", "tuning.result_keys", "mlflow_tracking.report"]
)
def test_reading_results_imports_neither_ray_nor_torch(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "loaded = [name for name in ('ray', 'torch') if name in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == "", f"importing {module} loaded {done.stdout.strip()}"
