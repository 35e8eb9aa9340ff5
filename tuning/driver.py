"""The sweep driver: runs (or resumes) a sweep end to end, from the checks of its inputs to the
export of its best configuration, and turns SIGINT / SIGTERM into KILLED runs and --resume.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lungsrad.files import file_lock
from lungsrad.models.build import InitialWeights
from mlflow_tracking.run_writer import RunTracker
from mlflow_tracking.store import TrackingTarget, configure_http_retries
from tuning.cluster import check_resources, connect, disconnect
from tuning.cost import COST_FOLDER
from tuning.folds import check_splits
from tuning.interrupts import SweepInterrupted, received_signal, tune_running
from tuning.parent_run import export_outcome, open_parent_run, record_interrupt
from tuning.preflight import check_space_inputs
from tuning.presentation import SweepOutcome, mlflow_ui_hint, objectives_line, write_sweep_view
from tuning.reseed import run_reseed
from tuning.results import collect_outcomes
from tuning.search_space import SearchSpace
from tuning.settings import (
    DriverSettings,
    git_commit,
    open_tracking,
    set_tune_driver_defaults,
    synthetic_data_folder,
)
from tuning.sweep_assets import announce_weights, ship_weights
from tuning.sweep_data import ensure_synthetic_data, shared_feature_set
from tuning.sweep_folder import SweepFolder, driver_lock, locate_sweep_folder, write_state
from tuning.sweep_tracking import ResolvedTrials, SweepTracking
from tuning.trainable import SweepContext
from tuning.tuner import build_tuner


def run_sweep(
    space: SearchSpace,
    settings: DriverSettings,
    *,
    callbacks: Sequence[Any] = (),
    num_cpus: int | None = None,
    export_best: bool = True,
    check_inputs: bool = True,
    initial_weights: Mapping[str, InitialWeights] | None = None,
) -> SweepOutcome:
    """Runs (or resumes) a sweep end to end and exports its best configuration.

    Order: sweep folder (--resume) -> MLflow check -> checkpoints, data and split file
    (tuning.preflight) -> driver lock -> Ray -> resources check -> features -> parent run ->
    Tune -> export. Everything that can be wrong with the input fails before a trial starts.
    SIGINT / SIGTERM (under run_command) stop Tune, mark the runs KILLED and raise
    SweepInterrupted: nothing is exported.

    Args:
        space: the validated search space (data.root already set).
        settings: output, storage, tracking and Ray settings.
        callbacks: extra Tune callbacks (tests use them to observe trials).
        num_cpus: CPUs of a local Ray (None: all of this machine's).
        export_best: write best_config.yaml (final.py's seed runs have nothing to choose).
        check_inputs: run tuning.preflight's checks (final.py runs them itself, before Ray).
        initial_weights: the checkpoints' weights that check (final.py's) read, by
            model.checkpoint; with check_inputs, the checks' own. They reach the trials through
            Ray's object store: no trial opens model.checkpoint's path.

    Raises:
        ValueError / FileNotFoundError: bad input, unreachable MLflow, resources no node has, a
            sweep that another driver is running.
        SweepInterrupted: SIGINT / SIGTERM under run_command (nothing exported).
    """
    started = time.perf_counter()
    set_tune_driver_defaults()
    folder = locate_sweep_folder(space, settings)
    settings.output_root.mkdir(parents=True, exist_ok=True)
    target = open_tracking(settings)
    configure_http_retries()
    if check_inputs:
        # Checkpoints, data and split file: a bad one fails here in one line, not in every trial.
        initial_weights = check_space_inputs(space, generated_data=synthetic_data_folder(settings))
    announce_weights(initial_weights or {})
    # Ray starts only once the checks above have passed.
    with driver_lock(folder):
        cluster = connect(settings.ray_address, num_cpus=num_cpus)
        try:
            print(cluster.describe(), flush=True)
            parent, outcomes, view_key = _run_tune(
                space,
                settings,
                folder,
                target,
                callbacks=callbacks,
                shipped_weights=ship_weights(initial_weights or {}),
            )
        finally:
            disconnect(cluster)
        return export_outcome(
            space,
            folder,
            target,
            parent,
            outcomes,
            role=settings.role,
            started=started,
            export_best=export_best,
            view_key=view_key,
        )


def _run_tune(
    space: SearchSpace,
    settings: DriverSettings,
    folder: SweepFolder,
    target: TrackingTarget,
    *,
    callbacks: Sequence[Any],
    shipped_weights: Mapping[str, Any],
) -> tuple[RunTracker, list[Any], str | None]:
    """Resources check, data, parent run and saved view, Tune until every trial has ended, then
    the `reseed` step; the parent run, the outcomes of every trial and the view's share key.
    A signal once the parent run exists marks the runs KILLED and raises SweepInterrupted
    (tuning.interrupts) with the sweep id that --resume takes."""
    # Before data and features: a trial no node can hold fails in seconds, not minutes.
    check_resources(space.resources)
    feature_set = _prepare_data(space, settings)
    commit = git_commit()
    parent = open_parent_run(space, settings, target, folder, commit)
    assert parent.run_id is not None
    write_state(folder, space, target, parent_run_id=parent.run_id, git_commit=commit)
    tracking = SweepTracking(
        target=target,
        parent_run_id=parent.run_id,
        role="trial" if settings.role == "sweep" else "final_seed",
        git_commit=commit,
        staging=folder.path / ".mlflow_staging",
        resolved=ResolvedTrials(space),
        sweep_id=folder.sweep_id,
        cost_folder=folder.path / COST_FOLDER,
    )
    try:
        _announce(space, settings.role, folder, target, parent.run_id)
        view_key = write_sweep_view(space, target, folder.sweep_id, settings.role)
        print(f"  view: {mlflow_ui_hint(target, view_key)}", flush=True)
        context = SweepContext(space=space, shipped_weights=shipped_weights)
        tuner = build_tuner(
            space,
            folder,
            feature_set=feature_set,
            context=context,
            tracking=tracking,
            callbacks=callbacks,
        )
        with tune_running():
            grid = tuner.fit()
        # Tune marks the trials it stopped on a signal TERMINATED: only the signal tells.
        unfinished = len(grid) - grid.num_terminated - grid.num_errors
        if received_signal() is not None or unfinished > 0:
            raise SweepInterrupted(received_signal() or signal.SIGINT, f"{folder.path}")
        outcomes = collect_outcomes(grid, space, resolved=tracking.resolved)
        if space.reseed is not None:
            outcomes += run_reseed(
                space,
                outcomes,
                folder.path,
                feature_set=feature_set,
                context=context,
                tracking=tracking,
            )
    except KeyboardInterrupt as error:
        interrupted = (
            error if isinstance(error, SweepInterrupted) else SweepInterrupted(signal.SIGINT)
        )
        record_interrupt(
            space, folder, target, parent, interrupted, role=settings.role, tracking=tracking
        )
        raise interrupted from None
    return parent, outcomes, view_key


def _prepare_data(space: SearchSpace, settings: DriverSettings) -> Any:
    """The synthetic dataset (first use), the shared feature set (or None) and the check of the
    folds' splits: a fold without test cycles fails here, not in a trial."""
    data_root = space.base_config.data.root
    if data_root is not None and Path(data_root) == synthetic_data_folder(settings):
        with file_lock(settings.output_root / ".synthetic_data.lock"):  # concurrent sweeps
            ensure_synthetic_data(Path(data_root))
    feature_set = shared_feature_set(space)
    check_splits(space, feature_set)
    return feature_set


def _announce(
    space: SearchSpace, role: str, folder: SweepFolder, target: TrackingTarget, parent_run_id: str
) -> None:
    """The sweep's first line: its id, trials, search, protocol and where its results go."""
    total = space.num_trials()
    print(
        f"{role} '{space.name}' (sweep id {folder.sweep_id}): "
        f"{total if total is not None else '?'} trials ({space.search}, scheduler "
        f"{space.scheduler.kind}, protocol {space.protocol}, metric {space.metric} "
        f"{space.mode}); "
        f"results in {folder.path}; MLflow '{target.display_uri}' experiment "
        f"'{target.experiment_name}' parent run {parent_run_id}",
        flush=True,
    )
    if space.is_multi_objective:
        print(objectives_line(space), flush=True)
