"""Fault injection on real sweeps (issue 6): `tuning/sweep.py` runs as its own process with its
own local Ray and a SQLite MLflow store, and the test kills parts of it with SIGKILL.

- A trial's worker process killed mid-epoch: Ray retries the trial from its last checkpoint, the
  trial keeps one MLflow run, and its metrics equal those of the uninterrupted sweep.
- The driver (and with it the local Ray) killed mid-sweep: `--resume` finishes the sweep without
  re-running a finished trial, with one child run per trial under the original parent run, and
  exports the same best config as the uninterrupted sweep.

All three sweeps (uninterrupted, worker killed, driver killed) run the same search space: a grid
of three small trials, one at a time, on the deterministic CPU path.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tuning"))
from sweep_helpers import (  # noqa: E402
    SECONDS_PER_EPOCH_BASE,
    Held,
    SweepProcess,
    child_runs,
    mlflow_client,
    reported_epochs,
    write_tiny_space,
)

from lungsrad.data.synthetic import write_synthetic_dataset  # noqa: E402
from lungsrad.metrics import REPORT_SCORE, TRAIN_LOSS  # noqa: E402
from mlflow_tracking.tags import (
    PARENT_RUN_TAG,
    TAG_PREVIOUS_FAILURE,
    TAG_RESUMED_FROM_EPOCH,
    TAG_STARTS,
    TAG_TRIAL_ID,
    TAG_WORKER_PID,
)  # noqa: E402
from mlflow_tracking.uri import sqlite_uri  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.mlflow]

NAME = "fault_sweep"
EXPERIMENT = f"lungsrad-{NAME}"
NUM_EPOCHS = 3
TEMPERATURES = [0.05, 0.2, 0.8]
# The metrics that must be identical with and without the fault (every epoch).
COMPARED = [REPORT_SCORE, TRAIN_LOSS]


@pytest.fixture(scope="module")
def fault_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The search space of all three sweeps (data and feature cache shared)."""
    folder = tmp_path_factory.mktemp("fault_space")
    data = folder / "data"
    write_synthetic_dataset(data, num_recordings=30, seed=0)
    # Epochs of a few seconds, so that a kill right after epoch 1's checkpoint lands in epoch 2.
    base = json.loads(json.dumps(SECONDS_PER_EPOCH_BASE))
    base["train"]["num_epochs"] = NUM_EPOCHS
    path = write_tiny_space(
        folder / f"{NAME}.yaml",
        data=data,
        base=base,
        parameters={"method.patch_mix.temperature": {"grid": TEMPERATURES}},
        search="grid",
        max_concurrent_trials=1,
        max_failures=2,
        resources={"cpu": 1},
    )
    return path


@dataclass(frozen=True)
class SweepRecord:
    """What a sweep left: its output root, Tune folder and MLflow runs."""

    root: Path

    @property
    def uri(self) -> str:
        return sqlite_uri(self.root / "mlflow.db")

    @property
    def folder(self) -> Path:
        folders = sorted((self.root / "ray_results").glob(f"{NAME}_*"))
        assert len(folders) == 1, folders
        return folders[0]

    @property
    def parent_run_id(self) -> str:
        return json.loads((self.folder / "sweep.json").read_text())["parent_run_id"]

    def trial_dirs(self) -> list[Path]:
        return sorted((self.root / "ray_results").glob(f"{NAME}_*/trial_*"), key=lambda p: p.name)

    def children(self) -> list[Any]:
        return child_runs(self.uri, EXPERIMENT, self.parent_run_id)

    def best_config(self) -> dict[str, Any]:
        return yaml.safe_load((self.folder / "best_config.yaml").read_text())

    def curves(self) -> dict[float, dict[str, list[tuple[int, float]]]]:
        """{temperature: {metric: [(epoch, value), ...]}} of the sweep's trial runs."""
        client = mlflow_client(self.uri)
        curves = {}
        for run in self.children():
            temperature = float(run.data.params["method.patch_mix.temperature"])
            curves[temperature] = {
                key: sorted(
                    (m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)
                )
                for key in COMPARED
            }
        return curves


def _checkpoints(trial_dir: Path) -> list[str]:
    return sorted(p.name for p in trial_dir.glob("checkpoint_*"))


def _done_trial_ids(output: str) -> list[str]:
    return re.findall(r"\] (\S+) done in ", output)


def _state_knows_checkpoint(folder: Path, trial_id: str) -> bool:
    """True once Tune's saved experiment state lists a checkpoint of the trial in the trial's
    checkpoint manager (a restore then continues from it). A state saved between the trial's
    result and the checkpoint's registration has the result but no checkpoint."""
    for path in folder.glob("experiment_state-*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # being rewritten
            continue
        for trial_json, runtime_json in state.get("trial_data", []):
            if json.loads(trial_json).get("trial_id") != trial_id:
                continue
            manager = json.dumps(json.loads(runtime_json).get("checkpoint_manager"))
            # Stored pickled (hex) by Ray's JSON encoder; the path names the folder.
            if "checkpoint_0000" in manager or b"checkpoint_0000".hex() in manager:
                return True
    return False


def _trial_id(trial_dir: Path) -> str:
    return trial_dir.name.removeprefix("trial_")


@pytest.fixture(scope="module")
def uninterrupted(fault_space: Path, tmp_path_factory: pytest.TempPathFactory) -> SweepRecord:
    """The reference: the same sweep without faults."""
    root = tmp_path_factory.mktemp("uninterrupted") / "runs"
    root.mkdir()
    sweep = SweepProcess(fault_space, root, root.parent / "sweep.log")
    try:
        output = sweep.finish()
    finally:
        sweep.close()
    assert "3 trials, 3 done, 0 failed" in output, output[-4000:]
    return SweepRecord(root)


@pytest.fixture
def record(tmp_path: Path) -> SweepRecord:
    """The output root of the test's sweep."""
    root = tmp_path / "runs"
    root.mkdir()
    return SweepRecord(root)


@pytest.fixture
def start(
    fault_space: Path, record: SweepRecord, tmp_path: Path
) -> Iterator[Callable[..., SweepProcess]]:
    """start(log_name, *flags) runs the fault sweep into `record`; whatever is left of the
    processes it started is killed after the test."""
    started: list[SweepProcess] = []

    def launch(log_name: str, *flags: str) -> SweepProcess:
        started.append(SweepProcess(fault_space, record.root, tmp_path / log_name, *flags))
        return started[-1]

    try:
        yield launch
    finally:
        for sweep in started:
            sweep.close()


def _assert_same_curves(record: SweepRecord, reference: SweepRecord) -> None:
    got, expected = record.curves(), reference.curves()
    assert sorted(got) == sorted(expected) == TEMPERATURES
    for temperature, metrics in expected.items():
        for key, values in metrics.items():
            assert [step for step, _ in values] == list(range(1, NUM_EPOCHS + 1)), (key, values)
            assert all(math.isfinite(value) for _, value in values), (key, values)
            assert got[temperature][key] == values, (temperature, key)


def test_a_trial_worker_killed_mid_epoch_resumes_from_its_checkpoint(
    uninterrupted: SweepRecord, record: SweepRecord, start: Callable[..., SweepProcess]
) -> None:
    sweep = start("sweep.log")
    # The first trial's worker is held (SIGSTOP) as soon as the driver has epoch 1's result
    # and checkpoint, and killed while held: mid-training whatever the speed of the machine.
    pid = sweep.wait_for_trial_worker()

    def first_epoch_reported() -> bool:
        dirs = record.trial_dirs()
        return bool(dirs) and bool(reported_epochs(dirs[0]))

    sweep.wait_until(first_epoch_reported, "epoch 1 result", 300, interval_s=0.01)
    with Held(pid):
        trial_dir = record.trial_dirs()[0]
        trial_id = _trial_id(trial_dir)
        # The last epoch's checkpoint comes only after training: one is still to come.
        checkpointed = len(_checkpoints(trial_dir))
        assert checkpointed < NUM_EPOCHS, _checkpoints(trial_dir)
        os.kill(pid, signal.SIGKILL)
    output = sweep.finish()

    assert "3 trials, 3 done, 0 failed" in output, output[-4000:]
    assert f"{trial_id} failed, retrying from its last checkpoint" in output, output[-4000:]
    # Restarted from its checkpoint: Tune saw epochs 1, 2, 3 once each (a restart from scratch
    # would report epoch 1 twice).
    assert reported_epochs(trial_dir) == [1, 2, 3]
    children = record.children()
    assert len(children) == 3
    killed = [run for run in children if run.data.tags[TAG_TRIAL_ID] == trial_id]
    assert len(killed) == 1, "the retried trial must continue its MLflow run"
    tags = killed[0].data.tags
    assert killed[0].info.status == "FINISHED"
    assert tags[TAG_STARTS] == "2", tags
    # From the newest checkpoint Tune had registered (epoch 1, or 2 if it arrived meanwhile).
    assert 1 <= int(tags[TAG_RESUMED_FROM_EPOCH]) <= checkpointed, tags
    assert TAG_PREVIOUS_FAILURE in tags, tags
    assert int(tags[TAG_WORKER_PID]) != pid
    _assert_same_curves(record, uninterrupted)
    assert record.best_config() == uninterrupted.best_config()


def test_a_killed_driver_resumes_without_rerunning_finished_trials(
    uninterrupted: SweepRecord, record: SweepRecord, start: Callable[..., SweepProcess]
) -> None:
    first = start("first.log")

    def second_trial_reported() -> bool:
        dirs = record.trial_dirs()
        return len(dirs) >= 2 and bool(reported_epochs(dirs[1]))

    # The second trial's worker is held once the driver has its first result, so it cannot
    # finish while the driver saves a state that knows the checkpoint; then all is killed.
    first.wait_until(second_trial_reported, "second trial's first result", 400, interval_s=0.01)
    with Held(*first.trial_workers()):
        running = _trial_id(record.trial_dirs()[1])

        def state_saved() -> bool:
            if len(_done_trial_ids(first.output())) != 1:  # the driver's line of trial 1
                return False
            return _state_knows_checkpoint(record.folder, running)

        first.wait_until(state_saved, "saved state with the running trial's checkpoint", 120)
        first.kill()
    done_before = _done_trial_ids(first.output())
    folder, parent = record.folder, record.parent_run_id
    statuses = {run.data.tags[TAG_TRIAL_ID]: run.info.status for run in record.children()}
    assert sorted(statuses.values()) == ["FINISHED", "RUNNING"], statuses  # mid-sweep for real

    second = start("resume.log", "--resume")
    output = second.finish()
    assert "3 trials, 3 done, 0 failed" in output, output[-4000:]
    for trial_id in done_before:
        assert f"{trial_id} started" not in output, f"finished trial {trial_id} ran again"
        assert f"{trial_id} restored" not in output, f"finished trial {trial_id} ran again"

    assert record.folder == folder and record.parent_run_id == parent
    client = mlflow_client(record.uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if PARENT_RUN_TAG not in run.data.tags]
    assert [run.info.run_id for run in parents] == [parent], "--resume must reuse the parent run"
    assert parents[0].info.status == "FINISHED"
    children = record.children()
    assert len(children) == len(runs) - 1 == 3
    assert len({run.data.tags[TAG_TRIAL_ID] for run in children}) == 3
    for run in children:
        tags = run.data.tags
        assert run.info.status == "FINISHED", tags
        if tags[TAG_TRIAL_ID] in done_before:
            assert tags[TAG_STARTS] == "1", tags  # never started again
        elif statuses.get(tags[TAG_TRIAL_ID]) == "RUNNING":
            assert tags[TAG_STARTS] == "2" and tags[TAG_RESUMED_FROM_EPOCH] != "0", tags
    _assert_same_curves(record, uninterrupted)
    assert record.best_config() == uninterrupted.best_config()
