"""Sweeps on Ray clusters started with `ray start` on 127.0.0.1 (token authentication on):
`ray job submit` of a TPE + ASHA sweep, and a two-node cluster whose trials cannot all fit on one
node, logging to one MLflow server and one storage path, its pretrained checkpoint shipped from
the driver to the trials."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from mlflow_tracking.tags import TAG_GIT_COMMIT, TAG_NODE_ID, TAG_NODE_IP, TAG_STOPPED_EARLY
from mlflow_tracking.uri import sqlite_uri
from tuning.sweep_folder import STATE_FILE

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

from sweep_helpers import (  # noqa: E402
    REPO,
    TINY_BASE,
    Held,
    child_runs,
    mlflow_client,
    trial_workers,
)

SWEEP_SCRIPT = str(REPO / "tuning" / "sweep.py")


def parent_run_id(experiment_folder: Path) -> str:
    import json

    (folder,) = [p for p in experiment_folder.iterdir() if (p / STATE_FILE).is_file()]
    return json.loads((folder / STATE_FILE).read_text())["parent_run_id"]


def _wait_for(condition: Any, sweep: subprocess.Popen[bytes], log: Path) -> Any:
    """condition()'s first truthy value; fails if the sweep ends or 600 s pass first."""
    deadline = time.monotonic() + 600
    while not (value := condition()):
        if sweep.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"sweep ended or hung:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.05)
    return value


def test_ray_job_submit_runs_a_tpe_asha_sweep(ray_cluster, write_space, tmp_path) -> None:
    ray_cluster.start_head(num_cpus=2)
    space = write_space(
        tmp_path,
        "job_sweep",
        parameters={"method.patch_mix.alpha": {"loguniform": [0.3, 3.0]}},
        search="tpe",
        num_samples=3,
        max_concurrent_trials=2,
        scheduler={"kind": "asha", "grace_period": 1, "reduction_factor": 2, "max_t": 2},
        resources={"cpu": 1},
    )
    out = tmp_path / "out"
    command = [
        str(Path(sys.executable).with_name("ray")), "job", "submit",
        "--address", ray_cluster.dashboard_url,
        "--working-dir", str(REPO),
        "--runtime-env-json", '{"env_vars": {"LUNGSRAD_GIT_COMMIT": "test-commit"}}',
        "--",
        sys.executable, "tuning/sweep.py",
        "--space", str(space),
        "--output-root", str(out),
        "--experiment", "job-sweep",
    ]  # fmt: skip
    completed = subprocess.run(
        command, env=ray_cluster.env, capture_output=True, text=True, timeout=900
    )
    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, log[-4000:]
    assert "succeeded" in log.lower(), log[-4000:]
    assert "best config:" in log and "MLflow:" in log

    uri = sqlite_uri(out / "mlflow.db")
    parent = parent_run_id(out / "ray_results")
    runs = child_runs(uri, "job-sweep", parent)
    assert len(runs) == 3 and all(run.info.status == "FINISHED" for run in runs)
    assert (next((out / "ray_results").iterdir()) / "best_config.yaml").is_file()
    # ASHA stops trials whose first epoch is below the rung's median; those close as finished.
    client = mlflow_client(uri)
    for run in runs:
        assert run.data.tags[TAG_GIT_COMMIT] == "test-commit"
        epochs = client.get_metric_history(run.info.run_id, "epoch")
        stopped_early = run.data.tags.get(TAG_STOPPED_EARLY) == "true"
        assert stopped_early == (len(epochs) < 2)
        # Stopped or not, every run gets its curves and confusion matrix.
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"curves.png", "confusion_matrix.csv"} <= artifacts


def _head_only_asset(assets: Path) -> Path:
    """TINY_BASE's model weights (release format, weights no seed of the trials gives), placed
    where `lungsrad fetch dass-medium-v2` puts its file under the assets folder `assets`.

    The real asset is DASS-medium, far too slow to train here; what this test checks is that
    the name resolves on the head and its weights reach the trials, so the tiny model's weights
    stand in under the name (the fetch tests check what a real fetch accepts).
    """
    from lungsrad.assets.paths import asset_path
    from lungsrad.assets.registry import find_asset
    from lungsrad.config import config_from_dict
    from lungsrad.models import build_model

    base = {key: value for key, value in TINY_BASE.items() if key != "name"}
    torch.manual_seed(1234)
    state = build_model(config_from_dict(base)).state_dict()
    path = asset_path(find_asset(ASSET), assets)
    path.parent.mkdir(parents=True)
    torch.save({f"module.v.{key}": value for key, value in state.items()}, path)
    return path


ASSET = "dass-medium-v2"


def test_ray_job_submit_ships_a_head_only_fetch_asset_to_both_nodes(
    ray_cluster, mlflow_server, write_space, tmp_path
) -> None:
    """`ray job submit` of a sweep whose config names `fetch:dass-medium-v2`, on two nodes whose
    trials cannot all fit on one, the asset on the head only.

    Each node's processes get their own assets folder (LUNGSRAD_ASSETS): the head's holds the
    asset, the worker's is empty, so a trial on the worker that resolved `fetch:` itself would
    fail with "run lungsrad fetch". Every trial must finish from the weights the job's driver
    (on the head) read once and put in Ray's object store, and its run must name
    `fetch:dass-medium-v2`, `run.checkpoint_source: shipped` and the file's SHA-256. That a
    trial given shipped weights never opens the path at all is also checked in process
    (tests/lungsrad/training/test_initial_weights.py).
    """
    from lungsrad.assets.registry import ASSETS_DIR_VARIABLE

    checkpoint = _head_only_asset(tmp_path / "head_assets")
    sha256 = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    (tmp_path / "worker_assets").mkdir()
    # One `slot` per node: two trials at a time must land on different nodes.
    ray_cluster.start_head(
        num_cpus=2,
        resources={"slot": 1},
        env={ASSETS_DIR_VARIABLE: str(tmp_path / "head_assets")},
    )
    ray_cluster.add_worker(
        num_cpus=2,
        resources={"slot": 1},
        env={ASSETS_DIR_VARIABLE: str(tmp_path / "worker_assets")},
    )
    ray_cluster.wait_for_nodes(2)
    space = write_space(
        tmp_path,
        "two_nodes",
        base_overrides={"train.num_epochs": 1},
        parameters={"method.patch_mix.alpha": {"grid": [0.5, 1.0, 2.0, 4.0]}},
        search="grid",
        resources={"cpu": 1, "custom": {"slot": 1}},
    )
    storage = tmp_path / "shared_storage"
    log = tmp_path / "sweep.log"
    with open(log, "wb") as stream:
        sweep = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("ray")), "job", "submit",
                "--address", ray_cluster.dashboard_url,
                "--working-dir", str(REPO),
                "--",
                sys.executable, "tuning/sweep.py",
                "--space", str(space),
                "--set", f"model.checkpoint=fetch:{ASSET}",
                "--tracking-uri", mlflow_server.uri,
                "--experiment", "two-nodes",
                "--storage-path", str(storage),
                "--output-root", str(tmp_path / "out"),
            ],
            env=ray_cluster.env, stdout=stream, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    try:
        # The first trial's worker is held until a second trial runs: with one slot per node,
        # that one is on the other node (else one quick, reused worker could take every trial).
        token = ray_cluster.env["RAY_AUTH_TOKEN"]
        first = _wait_for(lambda: trial_workers(token), sweep, log)
        with Held(*first):
            _wait_for(lambda: len(trial_workers(token)) >= 2, sweep, log)
        sweep.wait(timeout=900)
    finally:
        sweep.kill()
        sweep.wait()
    output = log.read_text(errors="replace")
    assert sweep.returncode == 0, output[-4000:]
    assert "succeeded" in output.lower(), output[-4000:]
    assert "2 node(s)" in output
    assert f"checkpoint fetch:{ASSET}: read once from {checkpoint}" in output, output[-4000:]

    parent = parent_run_id(storage)
    runs = child_runs(mlflow_server.uri, "two-nodes", parent)
    assert len(runs) == 4 and all(run.info.status == "FINISHED" for run in runs)
    nodes = {(run.data.tags[TAG_NODE_ID], run.data.tags[TAG_NODE_IP]) for run in runs}
    assert len({node_id for node_id, _ in nodes}) == 2, nodes
    for run in runs:
        assert run.data.params["model.checkpoint"] == f"fetch:{ASSET}"
        assert run.data.params["run.checkpoint_source"] == "shipped"
        assert run.data.params["run.checkpoint_sha256"] == sha256
    # Every trial wrote to the one storage path and the one tracking server.
    (experiment,) = [p for p in storage.iterdir() if p.is_dir()]
    assert len(list(experiment.glob("trial_*"))) == 4
    assert not (tmp_path / "out" / "mlflow.db").exists()
