"""Fixtures of the tests' own PostgreSQL (mlflow_tracking.postgres.LocalPostgres: a temporary
cluster on a free 127.0.0.1 port, never a system service) and of a `mlflow server` on it, started
as docs/cluster.md's recipe says. Registered for every test package by tests/conftest.py.

One cluster per test module. A test that also wants an Optuna storage on the same PostgreSQL asks
the cluster for a second database: `optuna_url = postgres.create_database("optuna")`
(postgresql://lungsrad@127.0.0.1:PORT/optuna).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlflow_tracking.postgres import POSTGRES_BIN_GLOB, LocalPostgres, find_postgres_bin
from mlflow_tracking.server import LocalTrackingServer

MLFLOW_DATABASE = "mlflow"


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    """The module's own PostgreSQL cluster (skipped only where PostgreSQL is not installed;
    .ci/run installs Debian's `postgresql`)."""
    if find_postgres_bin() is None:
        pytest.skip(f"PostgreSQL is not installed (no initdb in {POSTGRES_BIN_GLOB})")
    with LocalPostgres() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def postgres_mlflow_server(
    postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalTrackingServer]:
    """`mlflow server --backend-store-uri postgresql://...` on the module's cluster (database
    `mlflow`), artifacts proxied to a temporary folder."""
    backend = postgres.create_database(MLFLOW_DATABASE)
    root = tmp_path_factory.mktemp("postgres_mlflow")
    with LocalTrackingServer(root, backend_store_uri=backend) as server:
        yield server
