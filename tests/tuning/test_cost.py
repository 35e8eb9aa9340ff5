"""The cost ledger and a sweep's totals, with the moments given by the test (never the clock)."""

from __future__ import annotations

import math

import pytest

from tuning.cost import (
    COST_ATTEMPTS,
    COST_DEVICE_SECONDS,
    COST_EPOCHS_RUN,
    COST_PEAK_GPU_MEMORY,
    CostLedger,
    load_costs,
    resource_units,
    sweep_cost,
)


def test_gpu_trials_count_gpus_and_cpu_trials_count_cpus() -> None:
    assert resource_units({"cpu": 4, "gpu": 0.5}) == ("GPU", 0.5)
    assert resource_units({"cpu": 2, "gpu": 0}) == ("CPU", 2.0)


def test_one_attempt_device_seconds_epochs_and_peak_memory(tmp_path) -> None:
    ledger = CostLedger(tmp_path, resources={"cpu": 4, "gpu": 2}, epochs_max=10)
    ledger.start("t1", now=100.0)
    ledger.result("t1", epoch=1, best_value=30.0, peak_gpu_memory_mib=900.0, now=110.0)
    ledger.result("t1", epoch=2, best_value=30.0, peak_gpu_memory_mib=1200.0, now=120.0)
    record = ledger.end("t1", now=125.0)
    metrics = record.metrics()
    assert metrics[COST_DEVICE_SECONDS] == 50.0  # 25 s x 2 GPUs
    assert metrics[COST_EPOCHS_RUN] == 2 and metrics[COST_ATTEMPTS] == 1
    assert metrics[COST_PEAK_GPU_MEMORY] == 1200.0
    assert record.best_at == 110.0  # the running best did not improve at epoch 2


def test_a_retried_trial_counts_every_attempt(tmp_path) -> None:
    ledger = CostLedger(tmp_path, resources={"cpu": 1}, epochs_max=4)
    ledger.start("t1", now=0.0)
    ledger.result("t1", epoch=1, best_value=10.0, peak_gpu_memory_mib=None, now=30.0)
    ledger.end("t1", now=40.0)  # failed at 40 s, Tune retries
    ledger.start("t1", now=50.0)
    record = ledger.end("t1", now=70.0)
    assert record.attempts == 2 and record.device_seconds == 60.0
    assert COST_PEAK_GPU_MEMORY not in record.metrics()


def test_a_resumed_sweep_adds_to_the_attempts_of_the_driver_before(tmp_path) -> None:
    first = CostLedger(tmp_path, resources={"cpu": 2}, epochs_max=4)
    first.start("t1", now=0.0)
    first.result("t1", epoch=1, best_value=5.0, peak_gpu_memory_mib=None, now=10.0)
    # The first driver was killed here: its attempt counts up to the last event it saw.
    second = CostLedger(tmp_path, resources={"cpu": 2}, epochs_max=4)
    second.start("t1", now=100.0)
    record = second.end("t1", now=105.0)
    assert record.attempts == 2
    assert record.device_seconds == (10.0 + 5.0) * 2
    assert load_costs(tmp_path)["t1"].device_seconds == record.device_seconds


def test_sweep_totals_until_best_and_what_early_stopping_saved(tmp_path) -> None:
    ledger = CostLedger(tmp_path, resources={"gpu": 1}, epochs_max=8)
    # t1 runs 0-80 s and reaches its best at 40 s; t2 runs 20-40 s, stopped after 2 of 8 epochs.
    ledger.start("t1", now=0.0)
    ledger.result("t1", epoch=4, best_value=50.0, peak_gpu_memory_mib=None, now=40.0)
    ledger.result("t1", epoch=8, best_value=50.0, peak_gpu_memory_mib=None, now=80.0)
    ledger.end("t1", now=80.0)
    ledger.start("t2", now=20.0)
    ledger.result("t2", epoch=2, best_value=20.0, peak_gpu_memory_mib=None, now=40.0)
    ledger.end("t2", stopped_early=True, now=40.0)
    cost = sweep_cost(
        load_costs(tmp_path),
        configurations=2,
        best_trial_ids=["t1"],
        wall_seconds=90.0,
        device="GPU",
    )
    assert cost.device == "GPU"
    assert cost.device_hours == pytest.approx(100.0 / 3600)
    assert cost.per_configuration_hours == pytest.approx(50.0 / 3600)
    assert cost.until_best_hours == pytest.approx((40.0 + 20.0) / 3600)
    assert cost.stopped_trials == 1
    assert cost.stopped_full_hours == pytest.approx(80.0 / 3600)  # 20 s x 8/2 epochs
    assert cost.saved_hours == pytest.approx(60.0 / 3600)
    text = "\n".join(cost.markdown())
    assert "GPU-hours" in text and "saved by the scheduler" in text
    assert "every attempt" not in text
    assert "saved" in cost.one_line()


def test_no_best_configuration_leaves_until_best_unknown(tmp_path) -> None:
    cost = sweep_cost({}, configurations=0, best_trial_ids=[], wall_seconds=1.0, device="CPU")
    assert math.isnan(cost.until_best_hours) and cost.device_hours == 0.0
    assert "n/a" in "\n".join(cost.markdown())
