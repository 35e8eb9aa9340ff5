"""mlflow_tracking never imports Ray or tuning (STYLE.md: only `tuning` imports Ray): every one
of its modules is imported in a fresh process, and neither appears in sys.modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_no_mlflow_tracking_module_imports_ray_or_tuning() -> None:
    modules = sorted(
        f"mlflow_tracking.{path.stem}" for path in (REPO / "mlflow_tracking").glob("*.py")
    )
    assert "mlflow_tracking.report" in modules and "mlflow_tracking.run_writer" in modules
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'tuning')]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *modules],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
