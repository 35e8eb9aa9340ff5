"""Opening a SQLite MLflow store (issue 12): several processes creating a new store at the same
moment all succeed (a lock file serialises MLflow's table creation), and a store left
half-initialised by a killed process is rebuilt when it holds no run, else named in one line.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_tracking.store import make_client, open_experiment
from mlflow_tracking.uri import sqlite_uri

pytestmark = pytest.mark.mlflow
REPO = Path(__file__).resolve().parents[2]


def _open_when_all_ready(uri: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    import mlflow  # noqa: F401 (imported before the barrier: all open the store together)

    barrier.wait(timeout=120)
    open_experiment(uri, "together")


def test_processes_creating_a_new_store_at_once_all_succeed(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path / "mlflow.db")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    processes = [
        context.Process(target=_open_when_all_ready, args=(uri, barrier)) for _ in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert make_client(uri).get_experiment_by_name("together") is not None


def _leave_migration_table(database: Path) -> None:
    """What a process killed inside an alembic batch migration leaves behind."""
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE _alembic_tmp_latest_metrics (key VARCHAR(250))")


def _open_in_new_process(database: Path, experiment: str) -> subprocess.CompletedProcess[str]:
    """open_experiment in a process of its own (as a new driver would; MLflow caches a store's
    database engine per process)."""
    code = (
        "import sys; from mlflow_tracking.store import open_experiment; "
        "from mlflow_tracking.uri import sqlite_uri; "
        "open_experiment(sqlite_uri(sys.argv[1]), sys.argv[2])"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(database), experiment],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def test_an_empty_half_initialised_store_is_rebuilt(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    assert _open_in_new_process(database, "first").returncode == 0
    _leave_migration_table(database)
    rebuilt = _open_in_new_process(database, "second")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilding the empty MLflow store" in rebuilt.stderr, rebuilt.stderr
    assert "_alembic_tmp_latest_metrics" in rebuilt.stderr
    client = make_client(sqlite_uri(database))
    run = client.create_run(client.get_experiment_by_name("second").experiment_id)
    assert client.get_run(run.info.run_id).info.status == "RUNNING"


def test_a_half_initialised_store_with_runs_is_named_in_one_line(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    target = open_experiment(sqlite_uri(database), "kept")
    target.client().create_run(target.experiment_id)
    _leave_migration_table(database)
    with pytest.raises(ValueError, match="half-initialised") as caught:
        make_client(sqlite_uri(database))
    message = str(caught.value)
    assert "\n" not in message and str(database) in message and "1 runs" in message
    assert database.is_file()  # never removed while it holds runs
