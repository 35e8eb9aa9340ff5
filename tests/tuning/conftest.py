"""Fixtures for the sweep tests: tiny search spaces over the synthetic data, a local Ray per test
module, `ray start` clusters and a real `mlflow server` (helpers in sweep_helpers.py)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import TINY_BASE, RayCluster

from mlflow_tracking.server import LocalTrackingServer

# The parameters of the shared TPE smoke sweep (fixture tpe_sweep).
TPE_SWEEP_PARAMETERS: dict[str, Any] = {
    "method.patch_mix.temperature": {"loguniform": [0.03, 0.3]},
    "method.patch_mix.alpha": {"choice": [0.5, 2.0]},
}


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep_feature_cache")


@pytest.fixture(scope="session")
def write_space(synthetic_root: Path, feature_cache: Path):
    """Factory: write_space(folder, name, **top_level_keys) -> path of a tiny search space.

    `base_overrides` given as a keyword are merged over the tiny base.
    """

    def write(folder: Path, name: str, **keys: Any) -> Path:
        base = json.loads(json.dumps(TINY_BASE))
        base["name"] = name
        base["data"].update({"root": str(synthetic_root), "cache_dir": str(feature_cache)})
        for path, value in (keys.pop("base_overrides", None) or {}).items():
            node = base
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        document = {"name": name, "base_overrides": base, "max_failures": 1, **keys}
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs, no dashboard) shared by the tests of a module."""
    import ray

    if ray.is_initialized():  # another module's Ray would hide this one's settings
        ray.shutdown()
    # Short path: Ray's unix sockets live under the temp dir (108-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        _temp_dir=temp_dir,
    )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTrackingServer]:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend), stopped after the module."""
    with LocalTrackingServer(tmp_path_factory.mktemp("mlflow_server")) as server:
        yield server


@pytest.fixture
def ray_cluster() -> Iterator[RayCluster]:
    cluster = RayCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def tpe_sweep(write_space, tmp_path_factory):
    """One finished 3-trial TPE smoke sweep (1 epoch each, parameters TPE_SWEEP_PARAMETERS) with
    its Optuna study in OUTPUT_ROOT/optuna.db, shared by the study, warm-start and dashboard tests
    (issue 27): (space, outcome, console output). Uses the local Ray of the module that asks
    first, else starts (and stops) one of its own."""
    import contextlib
    import io

    from mlflow_tracking.uri import sqlite_uri
    from tuning.driver import run_sweep
    from tuning.search_space import load_search_space
    from tuning.settings import DriverSettings

    folder = tmp_path_factory.mktemp("tpe_sweep")
    space = load_search_space(
        write_space(
            folder,
            "earlier",
            parameters=TPE_SWEEP_PARAMETERS,
            search="tpe",
            num_samples=3,
            max_concurrent_trials=2,
            seeds=[0],
            resources={"cpu": 1},
            base_overrides={"train.num_epochs": 1},
        )
    )
    root = folder / "runs"
    settings = DriverSettings(
        output_root=root,
        storage_path=root / "ray_results",
        tracking_uri=sqlite_uri(root / "mlflow.db"),
        experiment="lungsrad-earlier",
        ray_address=None,
    )
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        outcome = run_sweep(space, settings, num_cpus=2)
    return space, outcome, console.getvalue()
