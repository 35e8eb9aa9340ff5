"""What the driver of one sweep knows about its MLflow runs: where they go, the writer of each
trial's run, and each trial's config resolved once. Created by the driver and handed to its Tune
callbacks; never pickled with them (Tune pickles callbacks with the experiment, and the tracking
URI may hold credentials).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_tracking.run_writer import RunTracker
from mlflow_tracking.store import TrackingTarget
from tuning.cost import CostLedger
from tuning.search_space import ResolvedTrial, SearchSpace


@dataclass
class TrialRun:
    """The driver's writer of one trial's run, and what it knows about the run."""

    tracker: RunTracker
    ledger: CostLedger | None = None  # the sweep's cost records (tuning.cost)
    starts: int = 0  # trial processes started by this driver
    starts_written: int = 0
    failure: str | None = None  # why its last process failed (moved to previous_failure)


@dataclass
class ResolvedTrials:
    """Each Tune trial's config resolved (and validated) once on the driver, by trial id: the
    progress lines, the trial's MLflow run and the sweep's outcomes share it."""

    space: SearchSpace
    by_trial: dict[str, ResolvedTrial] = field(default_factory=dict)

    def get(self, trial_id: str, config: Mapping[str, Any]) -> ResolvedTrial:
        """The resolved config of trial `trial_id` (whose Tune config is `config`)."""
        resolved = self.by_trial.get(trial_id)
        if resolved is None:
            resolved = self.by_trial[trial_id] = self.space.resolve(config)
        return resolved


@dataclass
class SweepTracking:
    """Where the sweep run by this driver writes, and the writers of its trial runs."""

    target: TrackingTarget
    parent_run_id: str
    role: str  # role tag of the trial runs: "trial" or "final_seed"
    git_commit: str
    staging: Path  # driver-local folder for artifacts waiting to be uploaded
    resolved: ResolvedTrials
    sweep_id: str = ""  # tagged on every trial run (the saved view's search filter)
    cost_folder: Path | None = None  # the sweep's cost ledger (tuning.cost)
    runs: dict[str, TrialRun] = field(default_factory=dict)

    def deliver_pending(self, *, timeout_s: float) -> bool:
        """Sends what the trial runs still hold (waiting at most `timeout_s` for MLflow); warns
        with what was not delivered. True when everything was sent."""
        deadline = time.monotonic() + timeout_s
        undelivered = {}
        for trial_id, run in self.runs.items():
            if not run.tracker.deliver(timeout_s=max(0.0, deadline - time.monotonic())):
                undelivered[trial_id] = run.tracker.pending
        if undelivered:
            warnings.warn(
                f"MLflow at '{self.target.display_uri}' stayed unreachable for {timeout_s:.0f} "
                f"s: updates of trial runs were not delivered ({undelivered}); the trials' "
                "results and checkpoints stay in the sweep folder",
                stacklevel=2,
            )
        return not undelivered
