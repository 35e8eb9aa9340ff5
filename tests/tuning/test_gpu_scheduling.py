"""GPU scheduling without a GPU: a local Ray with two logical GPUs runs trials asking for 0.5 GPU
at most four at a time and at most two per GPU, each with its own CUDA_VISIBLE_DEVICES; the
trials' config says train.device cpu (torch sees no CUDA device here, and a trial given a GPU it
cannot see would fail), and each says why it trains on CPU in its MLflow tags."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import pytest
import ray
import torch
from ray import tune

from mlflow_tracking.tags import (
    TAG_CUDA_VISIBLE_DEVICES,
    TAG_DEVICE,
    TAG_DEVICE_REASON,
    TAG_GPU_IDS,
    TAG_TRIAL_ID,
)
from mlflow_tracking.uri import sqlite_uri
from tuning.driver import run_sweep
from tuning.search_space import load_search_space
from tuning.settings import DriverSettings

pytestmark = [pytest.mark.ray, pytest.mark.mlflow, pytest.mark.slow]

from sweep_helpers import child_runs  # noqa: E402

EXPERIMENT = "test-gpu-scheduling"
# Driver-side record of (+1 start / -1 end, trial id) in the order Tune's controller saw them;
# the callback runs in this process.
EVENTS: list[tuple[int, str]] = []


class ConcurrencyRecorder(tune.Callback):
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        EVENTS.append((1, trial.trial_id))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        EVENTS.append((-1, trial.trial_id))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        EVENTS.append((-1, trial.trial_id))


def max_running(events: list[tuple[int, str]], trial_ids: set[str] | None = None) -> int:
    """The most trials (of `trial_ids`, default all) running at once."""
    running = peak = 0
    for change, trial_id in events:
        if trial_ids is None or trial_id in trial_ids:
            running += change
            peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def logical_gpu_ray():
    if ray.is_initialized():  # another module's Ray would hide this one's settings
        ray.shutdown()
    temp_dir = tempfile.mkdtemp(prefix="rg", dir="/tmp")
    ray.init(
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        _temp_dir=temp_dir,
    )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_half_gpu_trials_run_four_at_a_time_on_cpu(logical_gpu_ray, write_space, tmp_path) -> None:
    assert not torch.cuda.is_available()
    space = load_search_space(
        write_space(
            tmp_path,
            "gpu_packing",
            base_overrides={"train.num_epochs": 1, "train.device": "cpu"},
            parameters={"method.patch_mix.alpha": {"grid": [0.5, 1.0, 2.0, 4.0, 8.0]}},
            search="grid",
            resources={"cpu": 0.25, "gpu": 0.5},
        )
    )
    settings = DriverSettings(
        output_root=tmp_path / "runs",
        storage_path=tmp_path / "runs" / "ray_results",
        tracking_uri=sqlite_uri(tmp_path / "runs" / "mlflow.db"),
        experiment=EXPERIMENT,
        ray_address=None,
    )
    EVENTS.clear()
    outcome = run_sweep(space, settings, callbacks=[ConcurrencyRecorder()])
    assert [o.status for o in outcome.outcomes] == ["done"] * 5
    # 2 logical GPUs / 0.5 per trial: never more than four at once, never three on one GPU.
    # (How many overlap depends on how fast trials start and end, so only bounds are checked.)
    assert 1 <= max_running(EVENTS) <= 4

    runs = sorted(
        child_runs(settings.tracking_uri, EXPERIMENT, outcome.parent_run_id),
        key=lambda run: run.info.start_time,
    )
    assert len(runs) == 5
    for run in runs:
        tags = run.data.tags
        assert tags[TAG_CUDA_VISIBLE_DEVICES] in ("0", "1"), tags[TAG_CUDA_VISIBLE_DEVICES]
        assert tags[TAG_GPU_IDS] == tags[TAG_CUDA_VISIBLE_DEVICES]
        assert tags[TAG_DEVICE] == "cpu"
        assert tags[TAG_DEVICE_REASON] == "train.device is 'cpu' in the config"
    for gpu in ("0", "1"):
        on_gpu = {
            run.data.tags[TAG_TRIAL_ID]
            for run in runs
            if run.data.tags[TAG_CUDA_VISIBLE_DEVICES] == gpu
        }
        assert max_running(EVENTS, on_gpu) <= 2, (gpu, EVENTS)
