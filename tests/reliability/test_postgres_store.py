"""Sweeps on a `mlflow server` backed by PostgreSQL (issue 28), the multi-node recipe of
docs/cluster.md on one machine: the module's own PostgreSQL cluster and server (tests/postgres.py),
`tuning/sweep.py --tracking-uri http://127.0.0.1:PORT` as its own process with its own local Ray.

- The driver SIGKILLed while a trial is writing, then `--resume`: one run per trial, every epoch
  once, under the one parent run; the report, final.py and tuning.compare read the sweep back.
- PostgreSQL restarted, then the MLflow server restarted, in the middle of one sweep: the sweep
  finishes, its run holds every epoch once, and the console says each time, in one line, that the
  store stopped answering and that it answers again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tuning"))
from sweep_helpers import (  # noqa: E402
    REPO,
    Held,
    SweepProcess,
    child_runs,
    kill_processes_mentioning,
    mlflow_client,
    one_long_trial_space,
    reported_epochs,
    write_tiny_space,
)

from lungsrad.config import apply_overrides, load_config, save_config  # noqa: E402
from lungsrad.metrics import EPOCH, REPORT_SCORE  # noqa: E402
from mlflow_tracking.postgres import LocalPostgres  # noqa: E402
from mlflow_tracking.server import LocalTrackingServer  # noqa: E402
from mlflow_tracking.tags import PARENT_RUN_TAG, TAG_ROLE, TAG_TRIAL_ID  # noqa: E402
from tuning.compare import COMPARISON_FILE  # noqa: E402
from tuning.compare import main as compare_main  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow]

NAME = "pg_sweep"
EXPERIMENT = f"lungsrad-{NAME}"
TEMPERATURE = "method.patch_mix.temperature"
NOT_ANSWERING = "is not answering ("
ANSWERS_AGAIN = "answers again after"


def _runs(uri: str, experiment: str) -> list[Any]:
    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def _steps(uri: str, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in mlflow_client(uri).get_metric_history(run_id, key))


def _sweep_folder(root: Path, name: str) -> Path:
    (folder,) = sorted((root / "ray_results").glob(f"{name}_*"))
    return folder


@pytest.fixture(scope="module")
def resumed_sweep(
    postgres_mlflow_server: LocalTrackingServer, synthetic_root: Path, tmp_path_factory
) -> dict[str, Any]:
    """A one-at-a-time sweep (2 points x 2 seeds, 2 epochs, one trial at a time) on the
    PostgreSQL server, its driver SIGKILLed while the second trial writes, then resumed."""
    folder = tmp_path_factory.mktemp("pg_sweep")
    space = write_tiny_space(
        folder / f"{NAME}.yaml",
        data=synthetic_root,
        parameters={TEMPERATURE: {"grid": [0.06, 0.2]}},
        base={"method": {"patch_mix": {"mode": "dual", "projection_dim": 16, "temperature": 0.06}}},
        search="one_at_a_time",
        seeds=[0, 1],
        max_concurrent_trials=1,
        max_failures=1,
        resources={"cpu": 1},
    )
    root = folder / "runs"
    root.mkdir()
    uri = postgres_mlflow_server.uri
    flags = ("--tracking-uri", uri, "--experiment", EXPERIMENT)
    first = SweepProcess(space, root, folder / "first.log", *flags)
    resumed = None
    try:

        def second_trial_reported() -> bool:
            dirs = sorted((root / "ray_results").glob(f"{NAME}_*/trial_*"))
            return len(dirs) >= 2 and any(reported_epochs(d) for d in dirs[1:])

        first.wait_until(second_trial_reported, "the second trial's first epoch", 600)
        with Held(*first.trial_workers()):
            first.kill()
        killed_statuses = sorted(
            run.info.status for run in _runs(uri, EXPERIMENT) if PARENT_RUN_TAG in run.data.tags
        )
        resumed = SweepProcess(space, root, folder / "resume.log", *flags, "--resume")
        output = resumed.finish()
    finally:
        first.close()
        if resumed is not None:
            resumed.close()
    sweep_folder = _sweep_folder(root, NAME)
    state = json.loads((sweep_folder / "sweep.json").read_text())
    return {
        "uri": uri,
        "folder": sweep_folder,
        "parent_run_id": state["parent_run_id"],
        "killed_statuses": killed_statuses,
        "output": output,
    }


def test_a_killed_driver_resumes_on_postgres_with_nothing_lost_and_nothing_twice(
    resumed_sweep: dict[str, Any],
) -> None:
    uri, parent = resumed_sweep["uri"], resumed_sweep["parent_run_id"]
    assert "RUNNING" in resumed_sweep["killed_statuses"], "the driver was killed mid-sweep"
    assert "4 trials, 4 done, 0 failed" in resumed_sweep["output"], resumed_sweep["output"][-4000:]
    runs = _runs(uri, EXPERIMENT)
    parents = [run for run in runs if PARENT_RUN_TAG not in run.data.tags]
    assert [run.info.run_id for run in parents] == [parent], "--resume must reuse the parent run"
    children = child_runs(uri, EXPERIMENT, parent)
    assert len(children) == len(runs) - 1 == 4
    assert len({run.data.tags[TAG_TRIAL_ID] for run in children}) == 4, "a trial has two runs"
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags
    for run in children:
        for key in (EPOCH, REPORT_SCORE):
            assert _steps(uri, run.info.run_id, key) == [1, 2], (run.data.tags[TAG_TRIAL_ID], key)
    assert (resumed_sweep["folder"] / "best_config.yaml").is_file()


def _final(config_path: Path, uri: str, experiment: str, out: Path) -> str:
    """Runs tuning/final.py (seeds 0 and 1) on the PostgreSQL server; its parent run id."""
    ray_tmp = tempfile.mkdtemp(prefix="rp", dir="/tmp")  # short: Ray's unix sockets live there
    try:
        completed = subprocess.run(
            [
                sys.executable, str(REPO / "tuning" / "final.py"),
                "--config", str(config_path), "--seeds", "0", "1", "--gpu", "0",
                "--output-root", str(out), "--tracking-uri", uri, "--experiment", experiment,
            ],
            capture_output=True, text=True, cwd=out.parent, timeout=600, start_new_session=True,
            env={**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"},
        )  # fmt: skip
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    assert "| 4-class |" in completed.stdout
    finals = _runs(uri, experiment)
    (parent,) = [run for run in finals if run.data.tags.get(TAG_ROLE) == "final"]
    seeds = child_runs(uri, experiment, parent.info.run_id)
    assert sorted(run.data.params["train.seed"] for run in seeds) == ["0", "1"]
    assert {run.info.status for run in finals} == {"FINISHED"}
    assert f"{REPORT_SCORE}_mean" in parent.data.metrics
    return parent.info.run_id


def test_report_final_and_compare_read_the_sweep_back_from_postgres(
    resumed_sweep: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow_tracking.report import main as report_main

    uri = resumed_sweep["uri"]
    assert (
        report_main(
            ["--experiment", EXPERIMENT, "--tracking-uri", uri, "--no-log"]
            + ["--out", str(tmp_path / "report")]
        )
        == 0
    )
    assert "| 0.06 (base) | 2 |" in capsys.readouterr().out

    # final.py on the sweep's best config and on the other temperature, then tuning.compare
    # pairs their seed runs, all read from the PostgreSQL-backed server.
    best = load_config(resumed_sweep["folder"] / "best_config.yaml")
    parents = []
    for name, temperature in (("pg_a", 0.06), ("pg_b", 0.2)):
        config = apply_overrides(
            best, {"name": name, "train.num_epochs": 1, TEMPERATURE: temperature}
        )
        save_config(config, tmp_path / f"{name}.yaml")
        parents.append(
            _final(tmp_path / f"{name}.yaml", uri, f"lungsrad-{name}", tmp_path / f"final_{name}")
        )
    out = tmp_path / "compare"
    assert (
        compare_main(["--parent-run-id", *parents, "--tracking-uri", uri, "--out", str(out)]) == 0
    )
    assert "| pg_a -> pg_b | [0, 1] |" in (out / COMPARISON_FILE).read_text()


def test_postgres_and_mlflow_server_restarts_mid_sweep_lose_nothing(
    postgres: LocalPostgres,
    postgres_mlflow_server: LocalTrackingServer,
    tmp_path: Path,
) -> None:
    server = postgres_mlflow_server
    epochs = 12
    space = one_long_trial_space(tmp_path, "pg_restarts", epochs=epochs)
    root = tmp_path / "runs"
    root.mkdir()
    experiment = "lungsrad-pg-restarts"
    client = mlflow_client(server.uri)
    sweep = SweepProcess(
        space,
        root,
        tmp_path / "sweep.log",
        "--tracking-uri",
        server.uri,
        "--experiment",
        experiment,
    )

    def reported() -> int:
        folders = list(root.glob("ray_results/pg_restarts_*/trial_*"))
        return len(reported_epochs(folders[0])) if folders else 0

    def stored() -> int:
        found = client.get_experiment_by_name(experiment)
        runs = found and client.search_runs([found.experiment_id], "tags.`lungsrad.role` = 'trial'")
        return len(client.get_metric_history(runs[0].info.run_id, EPOCH)) if runs else 0

    def lines(text: str) -> int:
        return sum(text in line for line in sweep.output().splitlines())

    try:
        # The trial's worker is held whenever a server stops or starts, so training speed never
        # decides where the trial is; each outage lasts until the trial reported an epoch in it.
        worker = sweep.wait_for_trial_worker()
        sweep.wait_until(lambda: reported() >= 1, "epoch 1 result", 300, interval_s=0.01)
        with Held(worker):
            sweep.wait_until(lambda: stored() >= reported(), "the first epochs in the store", 300)
            postgres.stop()
        for outage, (stop_next, restart) in enumerate(
            [(server.stop, postgres.start), (None, server.start)], start=1
        ):
            at_stop = reported()
            assert at_stop + 2 < epochs, f"the trial was held too late (epoch {at_stop})"
            sweep.wait_until(lambda n=outage: lines(NOT_ANSWERING) >= n, "the outage line", 300)
            sweep.wait_until(lambda s=at_stop: reported() > s, "an epoch during the outage", 300)
            with Held(worker):
                restart()
                # The driver retries on its own (Tune's loop runs while the trial is held).
                sweep.wait_until(lambda n=outage: lines(ANSWERS_AGAIN) >= n, "the back line", 300)
                sweep.wait_until(
                    lambda: stored() >= reported(), "the kept epochs in the store", 300
                )
                if stop_next is not None:
                    stop_next()
        output = sweep.finish()
        runs = _runs(server.uri, experiment)
    finally:
        sweep.close()
        if not postgres.is_running:
            postgres.start()
        if server.process is None or server.process.poll() is not None:
            server.start()
    assert "1 trials, 1 done, 0 failed" in output, output[-4000:]
    assert lines(NOT_ANSWERING) == 2 and lines(ANSWERS_AGAIN) == 2, output[-4000:]
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    (trial,) = [run for run in runs if PARENT_RUN_TAG in run.data.tags]
    for key in (EPOCH, REPORT_SCORE):
        assert _steps(server.uri, trial.info.run_id, key) == list(range(1, epochs + 1)), key
