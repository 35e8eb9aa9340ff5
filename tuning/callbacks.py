"""Driver-side Tune callbacks: one compact progress line per event (instead of Ray's tables), and
`MlflowLogger`, the only writer of the trials' MLflow runs (trials report to Tune only).

Tune pickles these with the experiment (for `Tuner.restore`), so they hold no tracking URI: the
driver registers it with `bind_tracking` in the process that runs the sweep.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from lungsrad.config import dump_config, flatten_config
from lungsrad.metrics import EPOCH, metrics_degenerate_note
from lungsrad.training.checkpoints import CHECKPOINT_FILE, CheckpointError
from mlflow_tracking.artifacts import write_checkpoint_artifacts
from mlflow_tracking.run_writer import RunTracker
from mlflow_tracking.store import TrackingTarget
from mlflow_tracking.tags import (
    NOT_DEGENERATE,
    TAG_AMP,
    TAG_BEST_EPOCH,
    TAG_CUDA_VISIBLE_DEVICES,
    TAG_DATA_FINGERPRINT,
    TAG_DEGENERATE,
    TAG_DEVICE,
    TAG_DEVICE_NAME,
    TAG_DEVICE_REASON,
    TAG_FAILURE,
    TAG_GIT_COMMIT,
    TAG_GPU_IDS,
    TAG_METRIC,
    TAG_NODE_ID,
    TAG_NODE_IP,
    TAG_PREVIOUS_FAILURE,
    TAG_PROTOCOL,
    TAG_RESUMED_FROM_EPOCH,
    TAG_ROLE,
    TAG_SCAN_BACKEND,
    TAG_SEED,
    TAG_STARTS,
    TAG_STOPPED_EARLY,
    TAG_SWEEP,
    TAG_SWEEP_ID,
    TAG_TRIAL_ID,
    TAG_TRIAL_NAME,
    TAG_TRIAL_STATUS,
    TAG_VALUES,
    TAG_VARIANT,
    TAG_WORKER_PID,
)
from tuning.cost import COST_PEAK_GPU_MEMORY, CostLedger
from tuning.search_space import SearchSpace
from tuning.trainable import FACTS_KEY, FAILURE_KEY, TIMING_KEYS, best_metric_name

# How long the driver waits at the end of a sweep for an unreachable MLflow before it warns.
FINAL_DELIVERY_S = 120.0
# Tags from a trial's facts (tuning.trainable._TrialReporter / _trial_facts).
_FACT_TAGS = {
    "data_fingerprint": TAG_DATA_FINGERPRINT,
    "scan_backend": TAG_SCAN_BACKEND,
    "device": TAG_DEVICE,
    "device_name": TAG_DEVICE_NAME,
    "device_reason": TAG_DEVICE_REASON,
    "amp": TAG_AMP,
    "node_id": TAG_NODE_ID,
    "node_ip": TAG_NODE_IP,
    "worker_pid": TAG_WORKER_PID,
    "gpu_ids": TAG_GPU_IDS,
    "cuda_visible_devices": TAG_CUDA_VISIBLE_DEVICES,
    "resumed_from_epoch": TAG_RESUMED_FROM_EPOCH,
}


@dataclass
class _DriverTracking:
    """Where the sweep running in this process writes (never pickled)."""

    target: TrackingTarget
    parent_run_id: str
    role: str  # role tag of the trial runs: "trial" or "final_seed"
    git_commit: str
    staging: Path  # driver-local folder for artifacts waiting to be uploaded
    sweep_id: str = ""  # tagged on every trial run (the saved view's search filter)
    cost_folder: Path | None = None  # the sweep's cost ledger (tuning.cost)
    runs: dict[str, _TrialRun] = field(default_factory=dict)


@dataclass
class _TrialRun:
    """The driver's writer of one trial's run, and what it knows about the run."""

    tracker: RunTracker
    ledger: CostLedger | None = None  # the sweep's cost records (tuning.cost)
    starts: int = 0  # trial processes started by this driver
    starts_written: int = 0
    failure: str | None = None  # why its last process failed (moved to previous_failure)


_DRIVER: dict[str, _DriverTracking] = {}


def bind_tracking(
    target: TrackingTarget,
    parent_run_id: str,
    *,
    role: str,
    git_commit: str,
    staging: Path,
    sweep_id: str = "",
    cost_folder: Path | None = None,
) -> None:
    """Tells the callbacks of this process where the sweep's MLflow runs are."""
    _DRIVER["sweep"] = _DriverTracking(
        target=target,
        parent_run_id=parent_run_id,
        role=role,
        git_commit=git_commit,
        staging=staging,
        sweep_id=sweep_id,
        cost_folder=cost_folder,
    )


def _trial_error_line(trial: Any) -> str:
    """First meaningful line of a failed trial's error (the exception, not the traceback)."""
    path = getattr(trial, "error_file", None)
    text = ""
    if path:
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except OSError:
            text = ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if ":" in line and not line.startswith(("File ", "^", "~")):
            return line[:300]
    return lines[-1][:300] if lines else "unknown error (see the trial's error.txt)"


class ProgressPrinter(tune.Callback):
    """Prints one line per trial start, epoch, completion and failure."""

    def __init__(self, space: SearchSpace, *, stream: Any = None):
        self.space = space
        self.total = space.num_trials()
        self.best_name = best_metric_name(space.metric)
        self._started: dict[str, float] = {}
        self._numbers: dict[str, int] = {}
        self._stream = stream

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stream"] = None
        return state

    def _print(self, text: str) -> None:
        print(text, file=self._stream or sys.stdout, flush=True)

    def _tag(self, trial: Any) -> str:
        # Grid trials carry their index ("3f2a1_00004", stable across --resume); searcher
        # trials have random ids and are numbered in the order they are seen.
        if trial.trial_id not in self._numbers:
            suffix = str(trial.trial_id).rsplit("_", 1)[-1]
            index = int(suffix) + 1 if "_" in str(trial.trial_id) and suffix.isdigit() else None
            self._numbers[trial.trial_id] = index or len(self._numbers) + 1
        number = self._numbers[trial.trial_id]
        total = f"/{self.total}" if self.total else ""
        return f"[{number:>3}{total}] {trial.trial_id}"

    def _describe(self, trial: Any) -> str:
        try:
            return self.space.resolve(trial.config).describe()
        except (KeyError, ValueError):
            return str(trial.config)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started.setdefault(trial.trial_id, time.monotonic())
        self._print(f"{self._tag(trial)} started: {self._describe(trial)}")

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(f"{self._tag(trial)} restored from its last checkpoint")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(
            f"{self._tag(trial)} failed, retrying from its last checkpoint: "
            f"{_trial_error_line(trial)}"
        )

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if FAILURE_KEY in result:
            self._print(f"{self._tag(trial)} {result[FAILURE_KEY]}")
            return
        epochs = self.space.max_epochs
        value = result.get(self.space.metric, math.nan)
        best = result.get(self.best_name, math.nan)
        self._print(
            f"{self._tag(trial)} epoch {result.get('epoch', '?'):>3}/{epochs}: "
            f"{self.space.metric} {value:.2f} (best {best:.2f}), "
            f"{result.get('time_this_iter_s', math.nan):.1f} s"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        seconds = time.monotonic() - self._started.get(trial.trial_id, time.monotonic())
        best = (trial.last_result or {}).get(self.best_name, math.nan)
        self._print(
            f"{self._tag(trial)} done in {seconds:.0f} s: best {self.space.metric} {best:.2f}"
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(f"{self._tag(trial)} FAILED: {_trial_error_line(trial)}")


class MlflowLogger(tune.Callback):
    """Writes every trial's MLflow child run from what the trial reports to Tune.

    A run is found again by its trial-id tag under the parent run (a retry or `--resume`
    continues it; epochs already stored are not sent twice). Params and config.yaml come from the
    trial's resolved config, tags from the facts the trial process reports, per-epoch metrics
    (step = epoch) from its results, and curves, history and confusion matrix from its last Tune
    checkpoint once it ends. Updates wait in a buffer while MLflow is unreachable and are retried
    on each step of Tune's loop; the trial never waits for MLflow.
    """

    def __init__(self, space: SearchSpace):
        self.space = space

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self._run(trial)
        if run is None:
            return
        run.starts += 1
        run.tracker.set_tags({TAG_TRIAL_STATUS: "running"})
        if run.ledger is not None:
            run.ledger.start(trial.trial_id)
        if run.failure is not None:
            run.tracker.set_tags({TAG_PREVIOUS_FAILURE: run.failure})
            run.tracker.delete_tags([TAG_FAILURE])
            run.failure = None
        self._flush(run, force=True)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        run = self._run(trial)
        if run is None:
            return
        if FACTS_KEY in result:
            _log_facts(run.tracker, json.loads(result[FACTS_KEY]))
        if run.ledger is not None:
            run.ledger.result(
                trial.trial_id,
                epoch=int(result[EPOCH]) if EPOCH in result else None,
                best_value=result.get(best_metric_name(self.space.metric)),
                peak_gpu_memory_mib=result.get(COST_PEAK_GPU_MEMORY),
            )
        if FAILURE_KEY in result:
            run.tracker.set_tags({TAG_FAILURE: str(result[FAILURE_KEY])})
        else:
            run.tracker.log_metrics(_epoch_metrics(result), step=int(result[EPOCH]))
            timings = {key: result[key] for key in TIMING_KEYS if key in result}
            if timings:
                run.tracker.log_metrics(timings, step=0)
        self._flush(run)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # The trial failed and Tune retries it (e.g. its worker was killed): the run says why
        # and stays RUNNING; the retry moves the reason to lungsrad.previous_failure.
        run = self._run(trial)
        if run is None:
            return
        run.failure = _trial_error_line(trial)
        run.tracker.set_tags({TAG_FAILURE: run.failure, TAG_TRIAL_STATUS: "retrying"})
        self._log_cost(run, trial)
        self._flush(run)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self._run(trial)
        if run is None:
            return
        run.tracker.set_tags({TAG_FAILURE: _trial_error_line(trial), TAG_TRIAL_STATUS: "failed"})
        self._log_cost(run, trial)
        run.tracker.terminate("FAILED")
        self._flush(run, force=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self._run(trial)
        if run is None:
            return
        last = trial.last_result or {}
        stopped_early = FAILURE_KEY not in last and int(last.get(EPOCH, 0)) < self.space.max_epochs
        self._log_cost(run, trial, stopped_early=stopped_early)
        if FAILURE_KEY in last:  # stopped by the scheduler at its failure report
            run.tracker.set_tags({TAG_TRIAL_STATUS: "failed"})
            run.tracker.terminate("FAILED")
        else:
            if stopped_early:
                run.tracker.set_tags({TAG_STOPPED_EARLY: "true", TAG_TRIAL_STATUS: "stopped early"})
            else:
                run.tracker.set_tags({TAG_TRIAL_STATUS: "done"})
            run.tracker.set_tags({TAG_DEGENERATE: metrics_degenerate_note(last) or NOT_DEGENERATE})
            try:
                self._log_checkpoint_artifacts(run, trial)
            except (CheckpointError, OSError) as error:  # the run keeps its metrics
                warnings.warn(
                    f"no artifacts for trial {trial.trial_id}: its last checkpoint is not "
                    f"usable ({error})",
                    stacklevel=2,
                )
            run.tracker.terminate("FINISHED")
        self._flush(run, force=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        sweep = _DRIVER.get("sweep")
        for run in sweep.runs.values() if sweep else ():
            if run.tracker.pending:
                self._flush(run)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        deliver_pending(timeout_s=FINAL_DELIVERY_S)

    def _run(self, trial: Any) -> _TrialRun | None:
        """The trial's run writer (created, with params and config, on first sight)."""
        sweep = _DRIVER.get("sweep")
        if sweep is None:
            return None
        run = sweep.runs.get(trial.trial_id)
        if run is not None:
            return run
        resolved = self.space.resolve(trial.config)
        tracker = RunTracker(
            sweep.target,
            run_name=resolved.describe_short()[:240],
            parent_run_id=sweep.parent_run_id,
            identity={TAG_TRIAL_ID: trial.trial_id},
            tags={
                TAG_ROLE: sweep.role,
                TAG_SWEEP: self.space.name,
                TAG_TRIAL_NAME: str(trial),
                TAG_VARIANT: resolved.variant,
                TAG_VALUES: json.dumps(resolved.values, sort_keys=True),
                TAG_SEED: str(resolved.seed),
                TAG_PROTOCOL: resolved.config.train.protocol,
                TAG_METRIC: self.space.metric,
                TAG_GIT_COMMIT: sweep.git_commit,
                TAG_SWEEP_ID: sweep.sweep_id,
            },
            dedupe_key=EPOCH,
        )
        tracker.log_params(flatten_config(resolved.config))
        tracker.log_text(dump_config(resolved.config), "config.yaml")
        ledger = None
        if sweep.cost_folder is not None:
            ledger = CostLedger(
                sweep.cost_folder,
                resources=self.space.resources.as_dict(),
                epochs_max=resolved.config.train.num_epochs,
            )
        sweep.runs[trial.trial_id] = run = _TrialRun(tracker, ledger=ledger)
        return run

    def _log_cost(self, run: _TrialRun, trial: Any, *, stopped_early: bool = False) -> None:
        """Ends the trial's attempt in the cost ledger and logs its cost/ metrics (every attempt
        counted; cost/attempts says how many)."""
        if run.ledger is None:
            return
        record = run.ledger.end(trial.trial_id, stopped_early=stopped_early)
        run.tracker.log_metrics(record.metrics(), step=0)

    def _flush(self, run: _TrialRun, *, force: bool = False) -> None:
        run.tracker.flush(force=force)
        # The start count continues the one stored on the run (known once the run is found).
        if run.tracker.run_id is not None and run.starts_written != run.starts:
            stored = int(run.tracker.existing_tags.get(TAG_STARTS, "0") or 0)
            run.tracker.set_tags({TAG_STARTS: str(stored + run.starts)})
            run.starts_written = run.starts
            run.tracker.flush(force=force)

    def _log_checkpoint_artifacts(self, run: _TrialRun, trial: Any) -> None:
        """Curves, history and confusion matrix from the trial's last Tune checkpoint."""
        sweep = _DRIVER["sweep"]
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        folder = sweep.staging / trial.trial_id
        shutil.rmtree(folder, ignore_errors=True)
        if getattr(checkpoint.filesystem, "type_name", "") == "local":
            local = Path(checkpoint.path)  # read in place: no copy of a large file
        else:
            local = Path(checkpoint.to_directory(str(folder / "checkpoint")))
        files = sorted(local.rglob(CHECKPOINT_FILE))
        if not files:
            return
        written, metrics, best_epoch = write_checkpoint_artifacts(
            files[0], folder / "artifacts", title=f"{self.space.name} {trial.trial_id}"
        )
        shutil.rmtree(folder / "checkpoint", ignore_errors=True)
        run.tracker.log_artifacts(written)
        run.tracker.set_tags({TAG_BEST_EPOCH: str(best_epoch)})
        run.tracker.log_metrics(metrics, step=0)


def _epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The lungsrad metrics of a Tune result ("split/name" keys and the epoch), not Tune's own."""
    return {
        key: value
        for key, value in result.items()
        if (key == EPOCH or "/" in key) and key not in TIMING_KEYS and not isinstance(value, str)
    }


def _log_facts(tracker: RunTracker, facts: dict[str, Any]) -> None:
    tracker.set_tags({tag: str(facts[key]) for key, tag in _FACT_TAGS.items() if key in facts})
    params: dict[str, Any] = {}
    if "num_parameters" in facts:
        params["run.num_parameters"] = facts["num_parameters"]
    for name, size in (facts.get("split_sizes") or {}).items():
        params[f"run.split_size.{name}"] = size
    if params:
        tracker.log_params(params)


def deliver_pending(*, timeout_s: float) -> bool:
    """Sends what the trial runs still hold (waiting at most `timeout_s` for MLflow); warns
    with what was not delivered. True when everything was sent."""
    sweep = _DRIVER.get("sweep")
    if sweep is None:
        return True
    deadline = time.monotonic() + timeout_s
    undelivered = {}
    for trial_id, run in sweep.runs.items():
        if not run.tracker.deliver(timeout_s=max(0.0, deadline - time.monotonic())):
            undelivered[trial_id] = run.tracker.pending
    if undelivered:
        warnings.warn(
            f"MLflow at '{sweep.target.display_uri}' stayed unreachable for {timeout_s:.0f} s: "
            f"updates of trial runs were not delivered ({undelivered}); the trials' results and "
            "checkpoints stay in the sweep folder",
            stacklevel=2,
        )
    return not undelivered
