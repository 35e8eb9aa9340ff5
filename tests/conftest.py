"""Fixtures shared by every test package: the one synthetic ICBHI-layout dataset, and (from
tests/postgres.py) the tests' own PostgreSQL with a `mlflow server` on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungsrad.data.synthetic import write_synthetic_dataset

pytest_plugins = ["tests.postgres"]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset of 10 recordings (4 train and 2 test patients, ~47 cycles; every class
    in both splits; 4, 10 and 44.1 kHz), shared by the session: tests must not modify it."""
    root = tmp_path_factory.mktemp("synthetic_icbhi")
    write_synthetic_dataset(root, num_recordings=10, seed=0)
    return root
