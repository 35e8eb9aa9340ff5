"""Driver-side Tune callbacks: one compact progress line per event (instead of Ray's tables), and
`MlflowLogger`, the only writer of the trials' MLflow runs (trials report to Tune only).

Tune pickles these with the experiment (for `Tuner.restore`), so they pickle without their
tuning.sweep_tracking.SweepTracking (no tracking URI in the experiment state): the driver hands it
to them when it builds or restores the Tuner (`bind_callbacks`).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from lungsrad.checkpoint_format import CheckpointError
from lungsrad.config import dump_config, flatten_config
from lungsrad.metrics import EPOCH, metrics_degenerate_note
from lungsrad.training.checkpoint_files import CHECKPOINT_FILE
from mlflow_tracking.artifacts import (
    write_checkpoint_artifacts,
    write_device_confusions,
    write_run_artifacts,
)
from mlflow_tracking.run_writer import RunTracker
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
from tuning.result_keys import (
    ARTIFACTS_KEY,
    FACTS_KEY,
    FAILURE_KEY,
    TIMING_KEYS,
    TRAIN_SECONDS,
    best_metric_name,
)
from tuning.search_space import SearchSpace
from tuning.sweep_assets import CHECKPOINT_SHA256, CHECKPOINT_SOURCE
from tuning.sweep_tracking import ResolvedTrials, SweepTracking, TrialRun

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


def bind_callbacks(callbacks: Iterable[Any], tracking: SweepTracking) -> None:
    """Hands this driver's tracking to the callbacks of a Tuner (those restored from its
    experiment state included): the ones that need it have `bind`."""
    for callback in callbacks:
        bind = getattr(callback, "bind", None)
        if callable(bind):
            bind(tracking)


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

    def __init__(
        self, space: SearchSpace, *, stream: Any = None, tracking: SweepTracking | None = None
    ):
        self.space = space
        self.total = space.num_trials()
        self.best_name = best_metric_name(space.metric)
        self._started: dict[str, float] = {}
        self._numbers: dict[str, int] = {}
        self._stream = stream
        self._resolved = tracking.resolved if tracking is not None else ResolvedTrials(space)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stream"] = None
        state["_resolved"] = ResolvedTrials(self.space)
        return state

    def bind(self, tracking: SweepTracking) -> None:
        """Shares the driver's resolved trial configs."""
        self._resolved = tracking.resolved

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
            return self._resolved.get(trial.trial_id, trial.config).describe()
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
    trial's config (resolved once, shared with the progress lines), tags from the facts the trial
    process reports, per-epoch metrics (step = epoch) from its results, and curves, history and
    confusion matrices from its final result once it ends (from its last Tune checkpoint only for
    a trial the scheduler stopped early). Updates wait in a buffer while MLflow is unreachable and
    are retried on each step of Tune's loop; the trial never waits for MLflow.
    """

    # Class defaults: a logger restored from an older experiment state has neither attribute.
    _stream: Any = None
    _outage_since: float | None = None  # when the store stopped answering

    def __init__(
        self, space: SearchSpace, tracking: SweepTracking | None = None, *, stream: Any = None
    ):
        self.space = space
        self.tracking = tracking
        self._stream = stream
        self._outage_since = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["tracking"] = None
        state["_stream"] = None
        state["_outage_since"] = None
        return state

    def bind(self, tracking: SweepTracking) -> None:
        """Tells a logger restored from the experiment state where the sweep's runs are."""
        self.tracking = tracking

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
        self._retire(trial.trial_id, run)

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
                self._log_artifacts(run, trial)
            except (CheckpointError, OSError) as error:  # the run keeps its metrics
                warnings.warn(
                    f"no artifacts for trial {trial.trial_id}: its last checkpoint is not "
                    f"usable ({error})",
                    stacklevel=2,
                )
            run.tracker.terminate("FINISHED")
        self._flush(run, force=True)
        self._retire(trial.trial_id, run)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        sweep = self.tracking
        for trial_id, run in list(sweep.runs.items()) if sweep else ():
            if run.tracker.pending:
                self._flush(run)
                self._retire(trial_id, run)

    def _retire(self, trial_id: str, run: TrialRun) -> None:
        """Forgets the writer of a trial whose run has ended and holds nothing undelivered, and
        removes the trial's staged artifacts (uploaded by now): a sweep of hundreds of trials
        keeps no writer, MLflow client, ledger or artifact copy per finished trial, and each
        step of Tune's loop looks at the running trials only (issue 28's soak)."""
        if self.tracking is not None and run.tracker.terminated and not run.tracker.pending:
            self.tracking.runs.pop(trial_id, None)
            shutil.rmtree(self.tracking.staging / trial_id, ignore_errors=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.tracking is not None:
            self.tracking.deliver_pending(timeout_s=FINAL_DELIVERY_S)

    def _run(self, trial: Any) -> TrialRun | None:
        """The trial's run writer (created, with params and config, on first sight)."""
        sweep = self.tracking
        if sweep is None:
            return None
        run = sweep.runs.get(trial.trial_id)
        if run is not None:
            return run
        resolved = sweep.resolved.get(trial.trial_id, trial.config)
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
        sweep.runs[trial.trial_id] = run = TrialRun(tracker, ledger=ledger)
        return run

    def _log_cost(self, run: TrialRun, trial: Any, *, stopped_early: bool = False) -> None:
        """Ends the trial's attempt in the cost ledger and logs its cost/ metrics (every attempt
        counted; cost/attempts says how many)."""
        if run.ledger is None:
            return
        record = run.ledger.end(trial.trial_id, stopped_early=stopped_early)
        run.tracker.log_metrics(record.metrics(), step=0)

    def _flush(self, run: TrialRun, *, force: bool = False) -> None:
        run.tracker.flush(force=force)
        # The start count continues the one stored on the run (known once the run is found).
        if run.tracker.run_id is not None and run.starts_written != run.starts:
            stored = int(run.tracker.existing_tags.get(TAG_STARTS, "0") or 0)
            run.tracker.set_tags({TAG_STARTS: str(stored + run.starts)})
            run.starts_written = run.starts
            run.tracker.flush(force=force)
        self._note_store_state(run.tracker)

    def _note_store_state(self, tracker: RunTracker) -> None:
        """One console line when the store stops answering, one when it answers again (each
        tracker retries on its own, backing off from 2 s to once a minute)."""
        where = self.tracking.target.display_uri if self.tracking is not None else "?"
        if tracker.last_error is not None and self._outage_since is None:
            self._outage_since = time.monotonic()
            self._print(
                f"MLflow at '{where}' is not answering ({tracker.last_error}); training goes on, "
                "the driver keeps the updates and retries, backing off to once a minute"
            )
        elif tracker.last_error is None and self._outage_since is not None:
            seconds = time.monotonic() - self._outage_since
            self._outage_since = None
            self._print(
                f"MLflow at '{where}' answers again after {seconds:.0f} s; the kept updates are "
                "being delivered"
            )

    def _print(self, text: str) -> None:
        print(text, file=self._stream or sys.stdout, flush=True)

    def _log_artifacts(self, run: TrialRun, trial: Any) -> None:
        """Curves, history and confusion matrices from what the trial's final result carries
        (ARTIFACTS_KEY), else (a trial the scheduler stopped early) from its last checkpoint."""
        sent = (trial.last_result or {}).get(ARTIFACTS_KEY)
        if sent is None:
            self._log_checkpoint_artifacts(run, trial)
            return
        assert self.tracking is not None
        payload = json.loads(sent)
        folder = self.tracking.staging / trial.trial_id
        shutil.rmtree(folder, ignore_errors=True)
        title = f"{self.space.name} {trial.trial_id}"
        written = write_run_artifacts(
            folder / "artifacts",
            history=payload["history"],
            confusion=np.asarray(payload["confusion"]),
            title=title,
        )
        write_device_confusions(written, payload["device_confusion"], title=title)
        run.tracker.log_artifacts(written)
        run.tracker.set_tags({TAG_BEST_EPOCH: str(payload["best_epoch"])})
        run.tracker.log_metrics({TRAIN_SECONDS: float(payload["train_seconds"])}, step=0)

    def _log_checkpoint_artifacts(self, run: TrialRun, trial: Any) -> None:
        """Curves, history and confusion matrix from the trial's last Tune checkpoint."""
        assert self.tracking is not None
        sweep = self.tracking
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
    for key in (CHECKPOINT_SOURCE, CHECKPOINT_SHA256):  # which initial weights the run used
        if key in facts:
            params[f"run.{key}"] = facts[key]
    if params:
        tracker.log_params(params)
