"""What a sweep cost: the driver's ledger of each trial's attempts (wall time while Ray held the
trial's resources, times the GPUs held, or the CPUs on a CPU-only trial), epochs run of the
scheduled maximum and peak GPU memory; the sweep totals (device-hours, per configuration, until
the best configuration was first reached, and what full-length runs of ASHA-stopped trials would
have cost).

The ledger is one JSON file per trial in the sweep folder (`cost/<trial_id>.json`), written
atomically at every event of the trial, so a retried trial or a resumed sweep adds its attempts
to the ones already counted (the time after a killed driver's last event is not known).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lungsrad.files import write_text_atomic

COST_FOLDER = "cost"
# Metric keys (child runs: the trial's own; parent runs: the sweep's totals).
COST_DEVICE_SECONDS = "cost/device_seconds"
COST_WALL_SECONDS = "cost/wall_seconds"
COST_ATTEMPTS = "cost/attempts"
COST_EPOCHS_RUN = "cost/epochs_run"
COST_EPOCHS_MAX = "cost/epochs_max"
COST_PEAK_GPU_MEMORY = "cost/peak_gpu_memory_mib"  # reported by the trial on CUDA
COST_DEVICE_HOURS = "cost/device_hours"
COST_SWEEP_WALL_SECONDS = "cost/sweep_wall_seconds"
COST_HOURS_PER_CONFIGURATION = "cost/device_hours_per_configuration"
COST_HOURS_UNTIL_BEST = "cost/device_hours_until_best"
COST_STOPPED_FULL_HOURS = "cost/stopped_trials_full_length_device_hours"
COST_STOPPED_SAVED_HOURS = "cost/asha_saved_device_hours"
# The row of summary.md's cost section that states the sweep's wall time.
SUMMARY_WALL_ROW = "| sweep wall time |"


@dataclass
class TrialCost:
    """The attempts of one trial as the driver saw them."""

    trial_id: str
    device: str  # "GPU" when the trial held GPUs, else "CPU"
    units: float  # GPUs held (fractions allowed), or CPUs held on a CPU-only trial
    attempts: int = 0
    closed_seconds: float = 0.0  # wall time of the attempts that have ended
    open_seconds: float = 0.0  # wall time of the current (or last known) attempt so far
    attempt_started: float | None = None  # unix time the current attempt started (None: none)
    intervals: list[list[float]] = field(default_factory=list)  # [start, end] unix times
    epochs_run: int = 0
    epochs_max: int = 0
    peak_gpu_memory_mib: float = math.nan
    best_value: float = math.nan  # the running best of the sweep metric last reported
    best_at: float = math.nan  # unix time its running best last improved
    stopped_early: bool = False  # a scheduler (ASHA) stopped it before its last epoch

    @property
    def wall_seconds(self) -> float:
        """Wall time of every attempt."""
        return self.closed_seconds + self.open_seconds

    @property
    def device_seconds(self) -> float:
        """Wall time x GPUs held (CPUs for a CPU-only trial), every attempt counted."""
        return self.wall_seconds * self.units

    def metrics(self) -> dict[str, float]:
        """The child run's cost/ metrics."""
        values = {
            COST_DEVICE_SECONDS: self.device_seconds,
            COST_WALL_SECONDS: self.wall_seconds,
            COST_ATTEMPTS: float(self.attempts),
            COST_EPOCHS_RUN: float(self.epochs_run),
            COST_EPOCHS_MAX: float(self.epochs_max),
        }
        if math.isfinite(self.peak_gpu_memory_mib):
            values[COST_PEAK_GPU_MEMORY] = self.peak_gpu_memory_mib
        return values


def resource_units(resources: Mapping[str, float]) -> tuple[str, float]:
    """("GPU", GPUs) for a trial that holds GPUs, else ("CPU", CPUs)."""
    gpus = float(resources.get("gpu", 0.0) or 0.0)
    if gpus > 0:
        return "GPU", gpus
    return "CPU", float(resources.get("cpu", 1.0) or 0.0)


class CostLedger:
    """The driver's cost records of a sweep's trials (one JSON file per trial)."""

    def __init__(self, folder: Path, *, resources: Mapping[str, float], epochs_max: int):
        self.folder = folder
        self.device, self.units = resource_units(resources)
        self.epochs_max = epochs_max
        self._trials: dict[str, TrialCost] = {}

    def _path(self, trial_id: str) -> Path:
        return self.folder / f"{trial_id}.json"

    def trial(self, trial_id: str) -> TrialCost:
        """The record of a trial (read from disk the first time: a resumed sweep's driver)."""
        if trial_id not in self._trials:
            path = self._path(trial_id)
            if path.is_file():
                record = TrialCost(**json.loads(path.read_text(encoding="utf-8")))
                # The attempt the earlier driver saw running ended with that driver.
                record.closed_seconds += record.open_seconds
                record.open_seconds = 0.0
                record.attempt_started = None
            else:
                record = TrialCost(
                    trial_id=trial_id,
                    device=self.device,
                    units=self.units,
                    epochs_max=self.epochs_max,
                )
            self._trials[trial_id] = record
        return self._trials[trial_id]

    def start(self, trial_id: str, *, now: float | None = None) -> TrialCost:
        """A new attempt of the trial begins (first start, retry or resume)."""
        record = self.trial(trial_id)
        self._close(record, now)
        record.attempts += 1
        record.attempt_started = time.time() if now is None else now
        record.intervals.append([record.attempt_started, record.attempt_started])
        return self._save(record)

    def result(
        self,
        trial_id: str,
        *,
        epoch: int | None,
        best_value: float | None,
        peak_gpu_memory_mib: float | None,
        now: float | None = None,
    ) -> TrialCost:
        """The trial reported an epoch."""
        record = self.trial(trial_id)
        moment = time.time() if now is None else now
        self._advance(record, moment)
        if epoch is not None:
            record.epochs_run = max(record.epochs_run, int(epoch))
        if (
            best_value is not None
            and math.isfinite(best_value)
            and (not math.isfinite(record.best_value) or best_value != record.best_value)
        ):
            record.best_value = best_value
            record.best_at = moment
        if peak_gpu_memory_mib is not None and math.isfinite(peak_gpu_memory_mib):
            known = record.peak_gpu_memory_mib
            record.peak_gpu_memory_mib = (
                peak_gpu_memory_mib if not math.isfinite(known) else max(known, peak_gpu_memory_mib)
            )
        return self._save(record)

    def end(
        self, trial_id: str, *, stopped_early: bool = False, now: float | None = None
    ) -> TrialCost:
        """The current attempt ended (done, failed, stopped, or about to be retried)."""
        record = self.trial(trial_id)
        self._close(record, now)
        record.stopped_early = stopped_early
        return self._save(record)

    def _advance(self, record: TrialCost, moment: float) -> None:
        if record.attempt_started is None:
            return
        record.open_seconds = max(0.0, moment - record.attempt_started)
        if record.intervals:
            record.intervals[-1][1] = moment

    def _close(self, record: TrialCost, now: float | None) -> None:
        if record.attempt_started is None:
            return
        self._advance(record, time.time() if now is None else now)
        record.closed_seconds += record.open_seconds
        record.open_seconds = 0.0
        record.attempt_started = None

    def _save(self, record: TrialCost) -> TrialCost:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self._path(record.trial_id), json.dumps(asdict(record)) + "\n")
        return record


def load_costs(folder: Path) -> dict[str, TrialCost]:
    """Every trial's record in a sweep's cost folder ({} when there is none)."""
    costs = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        record = TrialCost(**json.loads(path.read_text(encoding="utf-8")))
        costs[record.trial_id] = record
    return costs


@dataclass(frozen=True)
class SweepCost:
    """A sweep's totals."""

    device: str  # GPU | CPU
    device_hours: float
    wall_seconds: float  # the sweep driver's wall time
    configurations: int
    until_best_hours: float  # NaN: no best configuration
    stopped_trials: int  # trials a scheduler stopped early
    stopped_full_hours: float  # what full-length runs of the stopped trials would have cost
    stopped_spent_hours: float  # what they did cost
    retried_trials: int  # trials with more than one attempt (every attempt is counted)

    @property
    def per_configuration_hours(self) -> float:
        """Device-hours per configuration (all seeds of it)."""
        return self.device_hours / self.configurations if self.configurations else math.nan

    @property
    def saved_hours(self) -> float:
        """Device-hours the scheduler saved on the stopped trials."""
        return self.stopped_full_hours - self.stopped_spent_hours

    def metrics(self) -> dict[str, float]:
        """The parent run's cost/ metrics."""
        values = {
            COST_DEVICE_HOURS: self.device_hours,
            COST_SWEEP_WALL_SECONDS: self.wall_seconds,
            COST_HOURS_PER_CONFIGURATION: self.per_configuration_hours,
        }
        if math.isfinite(self.until_best_hours):
            values[COST_HOURS_UNTIL_BEST] = self.until_best_hours
        if self.stopped_trials:
            values[COST_STOPPED_FULL_HOURS] = self.stopped_full_hours
            values[COST_STOPPED_SAVED_HOURS] = self.saved_hours
        return values

    def one_line(self) -> str:
        """The totals on one line (the sweep's closing lines)."""
        unit = f"{self.device}-hours"
        text = (
            f"{_hours(self.device_hours)} {unit} in {self.wall_seconds / 60:.1f} min, "
            f"{_hours(self.per_configuration_hours)} per configuration, "
            f"{_hours(self.until_best_hours)} until the best configuration was first reached"
        )
        if self.stopped_trials:
            text += (
                f"; early stopping saved {_hours(self.saved_hours)} of "
                f"{_hours(self.stopped_full_hours)} that full-length runs of the "
                f"{self.stopped_trials} stopped trials would have cost"
            )
        if self.retried_trials:
            text += f" (every attempt of {self.retried_trials} retried trial(s) counted)"
        return text

    def markdown(self) -> list[str]:
        """The summary's cost section."""
        unit = f"{self.device}-hours"
        lines = [
            "## Cost",
            "",
            f"Device time is wall time x {self.device}s a trial held "
            + (
                "(Ray's GPU reservation; fractions count as fractions)."
                if self.device == "GPU"
                else "(Ray's CPU reservation: CPU-hours, the trials held no GPU)."
            ),
            "",
            "| | |",
            "|---|---:|",
            f"| total | {_hours(self.device_hours)} {unit} |",
            f"{SUMMARY_WALL_ROW} {self.wall_seconds / 60:.1f} min |",
            f"| per configuration ({self.configurations}) | "
            f"{_hours(self.per_configuration_hours)} {unit} |",
            f"| until the best configuration was first reached | "
            f"{_hours(self.until_best_hours)} {unit} |",
        ]
        if self.stopped_trials:
            lines += [
                f"| {self.stopped_trials} trials stopped early: spent | "
                f"{_hours(self.stopped_spent_hours)} {unit} |",
                f"| ... at full length they would have cost | "
                f"{_hours(self.stopped_full_hours)} {unit} |",
                f"| saved by the scheduler | {_hours(self.saved_hours)} {unit} |",
            ]
        if self.retried_trials:
            lines += [
                "",
                f"{self.retried_trials} trial(s) ran more than once (retried after a failure or "
                "resumed): every attempt is counted.",
            ]
        return lines


def _hours(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}" if value < 0.1 else f"{value:.2f}"


def _device_seconds_until(costs: Sequence[TrialCost], moment: float) -> float:
    """Device seconds all trials had spent by unix time `moment`."""
    total = 0.0
    for record in costs:
        for start, end in record.intervals:
            total += max(0.0, min(end, moment) - start) * record.units
    return total


def sweep_cost(
    costs: Mapping[str, TrialCost],
    *,
    configurations: int,
    best_trial_ids: Sequence[str],
    wall_seconds: float,
    device: str,
) -> SweepCost:
    """Totals of a sweep from its trials' records.

    `best_trial_ids` are the best configuration's trials (one per seed): it was first reached
    when the last of them last improved its running best.
    """
    records = list(costs.values())
    best_moments = [costs[t].best_at for t in best_trial_ids if t in costs]
    until_best = (
        _device_seconds_until(records, max(best_moments)) / 3600.0
        if best_moments and all(math.isfinite(m) for m in best_moments)
        else math.nan
    )
    stopped = [r for r in records if r.stopped_early and 0 < r.epochs_run < r.epochs_max]
    return SweepCost(
        device=records[0].device if records else device,
        device_hours=sum(r.device_seconds for r in records) / 3600.0,
        wall_seconds=wall_seconds,
        configurations=configurations,
        until_best_hours=until_best,
        stopped_trials=len(stopped),
        stopped_full_hours=sum(r.device_seconds * r.epochs_max / r.epochs_run for r in stopped)
        / 3600.0,
        stopped_spent_hours=sum(r.device_seconds for r in stopped) / 3600.0,
        retried_trials=sum(r.attempts > 1 for r in records),
    )


def summary_wall_seconds(summary_text: str) -> float | None:
    """The sweep wall time its summary.md's cost section states (SweepCost.markdown, minutes to
    0.1), in seconds; None when the summary has no such row."""
    for line in summary_text.splitlines():
        if line.startswith(SUMMARY_WALL_ROW):
            figure = line[len(SUMMARY_WALL_ROW) :].strip(" |").removesuffix("min").strip()
            try:
                return float(figure) * 60.0
            except ValueError:
                return None
    return None
