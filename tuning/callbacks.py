"""Driver-side Tune callbacks: one compact progress line per event (instead of Ray's tables), and
closing a trial's MLflow run when its process could not (killed, stopped by the scheduler).

Tune pickles these with the experiment (for `Tuner.restore`), so they hold no tracking URI: the
driver registers it with `bind_tracking` in the process that runs the sweep.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from ray import tune

from lungsrad.metrics import EPOCH
from lungsrad.training.checkpoints import CHECKPOINT_FILE
from mlflow_tracking.artifacts import CURVES_PNG, write_checkpoint_artifacts
from mlflow_tracking.tracker import (
    PARENT_RUN_TAG,
    TAG_BEST_EPOCH,
    TAG_FAILURE,
    TAG_STOPPED_EARLY,
    TAG_TRIAL_ID,
    TrackingTarget,
    redact_text,
)
from tuning.search_space import SearchSpace
from tuning.trainable import best_metric_name

# The tracking target of the sweep running in this process (never pickled).
_DRIVER_TRACKING: dict[str, Any] = {}


def bind_tracking(target: TrackingTarget, parent_run_id: str) -> None:
    """Tells the callbacks of this process where the sweep's MLflow runs are."""
    _DRIVER_TRACKING.update(target=target, parent_run_id=parent_run_id, client=None)


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


class MlflowRunCloser(tune.Callback):
    """Closes a trial's MLflow run when the trial's own process could not, and records why a
    retried trial failed.

    A trial closes its run itself. This covers a trial killed more often than max_failures
    allows (FAILED with the reason), and a trial the scheduler stopped early: Tune may end its
    process right away, so its curves and confusion matrix are made here from the checkpoint
    Tune kept, and the run is marked FINISHED.
    """

    def __init__(self, space: SearchSpace):
        self.num_epochs = space.max_epochs
        self.space_name = space.name

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FINISHED", reason=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FAILED", reason=_trial_error_line(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # The trial failed and Tune retries it (e.g. its worker was killed): record why on the
        # run, which stays RUNNING; the retry moves the reason to lungsrad.previous_failure.
        self._close(trial, None, reason=_trial_error_line(trial))

    def _close(self, trial: Any, status: str | None, *, reason: str | None) -> None:
        target: TrackingTarget | None = _DRIVER_TRACKING.get("target")
        if target is None:
            return
        try:
            client = _DRIVER_TRACKING.get("client") or target.client()
            _DRIVER_TRACKING["client"] = client
            runs = client.search_runs(
                [target.experiment_id],
                filter_string=(
                    f"tags.`{TAG_TRIAL_ID}` = '{trial.trial_id}' and "
                    f"tags.`{PARENT_RUN_TAG}` = '{_DRIVER_TRACKING['parent_run_id']}'"
                ),
                max_results=5,
            )
            for run in runs:
                if reason is not None and TAG_FAILURE not in run.data.tags:
                    client.set_tag(run.info.run_id, TAG_FAILURE, reason)
                if status == "FINISHED":
                    self._add_missing_artifacts(client, run, trial)
                if status is not None and run.info.status == "RUNNING":
                    client.set_terminated(run.info.run_id, status=status)
        except Exception as error:  # MLflow down: the run stays RUNNING; the sweep goes on
            warnings.warn(
                f"could not close the MLflow run of trial {trial.trial_id}: "
                f"{redact_text(str(error), target.uri)[:200]}",
                stacklevel=2,
            )

    def _add_missing_artifacts(self, client: Any, run: Any, trial: Any) -> None:
        if CURVES_PNG in {item.path for item in client.list_artifacts(run.info.run_id)}:
            return
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        epochs = (trial.last_result or {}).get(EPOCH, 0)
        if epochs < self.num_epochs:
            client.set_tag(run.info.run_id, TAG_STOPPED_EARLY, "true")
        with tempfile.TemporaryDirectory(prefix="lungsrad_stopped_") as scratch:
            if getattr(checkpoint.filesystem, "type_name", "") == "local":
                local = Path(checkpoint.path)  # read in place: no copy of a large file
            else:
                local = Path(checkpoint.to_directory(str(Path(scratch) / "checkpoint")))
            files = sorted(local.rglob(CHECKPOINT_FILE))
            if not files:
                return
            folder, metrics, best_epoch = write_checkpoint_artifacts(
                files[0], Path(scratch) / "artifacts", title=f"{self.space_name} {trial.trial_id}"
            )
            client.log_artifacts(run.info.run_id, str(folder))
        client.set_tag(run.info.run_id, TAG_BEST_EPOCH, str(best_epoch))
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value, step=0)
