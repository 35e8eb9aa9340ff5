"""The sweep driver: runs (or resumes) a sweep end to end, from the checks of its inputs to the
export of its best configuration, and turns SIGINT / SIGTERM into KILLED runs and --resume.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lungsrad.errors import UserError
from lungsrad.files import file_lock
from lungsrad.models.build import InitialWeights
from mlflow_tracking.run_writer import RunTracker
from mlflow_tracking.seeded_trials import WARM_START_ARTIFACT
from mlflow_tracking.store import TrackingTarget, configure_http_retries
from tuning.cluster import check_resources, connect, disconnect
from tuning.cost import COST_FOLDER
from tuning.folds import check_splits
from tuning.interrupts import SweepInterrupted, received_signal, tune_running
from tuning.parent_run import export_outcome, open_parent_run, record_interrupt
from tuning.preflight import check_space_inputs
from tuning.presentation import SweepOutcome, mlflow_ui_hint, objectives_line, write_sweep_view
from tuning.reseed import run_reseed
from tuning.result_keys import best_metric_name
from tuning.results import collect_outcomes
from tuning.search_space import SearchSpace
from tuning.settings import (
    DriverSettings,
    git_commit,
    open_tracking,
    set_tune_driver_defaults,
    synthetic_data_folder,
)
from tuning.study import (
    ATTR_PARENT_RUN_ID,
    ATTR_SPACE_FILE,
    ATTR_SWEEP,
    ATTR_SWEEP_ID,
    TAG_STUDY_NAME,
    TAG_STUDY_STORAGE,
    SweepStudy,
    create_study,
    open_sweep_study,
    storage_url,
)
from tuning.sweep_assets import announce_weights, ship_weights
from tuning.sweep_data import ensure_synthetic_data, shared_feature_set
from tuning.sweep_folder import (
    SweepFolder,
    driver_lock,
    locate_sweep_folder,
    read_state,
    write_state,
)
from tuning.sweep_tracking import ResolvedTrials, SweepTracking
from tuning.trainable import SweepContext
from tuning.tuner import build_tuner
from tuning.warm_start import WarmStart, read_warm_start, seed_study, study_distributions


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
    study, warm = _open_study(space, settings, folder, target)
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
                study=(study, warm),
            )
        finally:
            disconnect(cluster)
        if study is not None:
            print(
                f"Optuna study '{study.name}' in {study.shown_storage}; see it with: "
                f"{study.dashboard_command()}",
                flush=True,
            )
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
    study: tuple[SweepStudy | None, WarmStart | None] = (None, None),
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
    study_state = _attach_study(space, folder, parent, *study)
    write_state(
        folder, space, target, parent_run_id=parent.run_id, git_commit=commit, **study_state
    )
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
            study=study[0],
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


def _open_study(
    space: SearchSpace, settings: DriverSettings, folder: SweepFolder, target: TrackingTarget
) -> tuple[SweepStudy | None, WarmStart | None]:
    """A TPE sweep's Optuna storage (opened before Ray: a bad URL fails in one line) and what
    --warm-start seeds it with (a new sweep only: a resumed study holds its seeds already)."""
    if space.search != "tpe":
        if settings.optuna_storage or settings.warm_start:
            flag = "--optuna-storage" if settings.optuna_storage else "--warm-start"
            raise UserError(f"{flag} applies to TPE searches; '{space.path}' is {space.search}")
        return None, None
    recorded = None if folder.is_new else read_state(folder.path).get(TAG_STUDY_STORAGE)
    study = open_sweep_study(
        storage_url(settings.optuna_storage, settings.output_root),
        sweep=space.name,
        sweep_id=folder.sweep_id,
        recorded_storage=recorded,
    )
    if settings.warm_start is None:
        return study, None
    if not folder.is_new:
        print("note: --warm-start ignored on --resume (the study holds its seeded trials)")
        return study, None
    return study, read_warm_start(
        space, target, settings.warm_start, storage_path=settings.storage_path
    )


def _attach_study(
    space: SearchSpace,
    folder: SweepFolder,
    parent: RunTracker,
    study: SweepStudy | None,
    warm: WarmStart | None,
) -> dict[str, Any]:
    """Creates (or loads) the sweep's study with its user attributes, adds the warm start's
    trials to a new one, tags the parent run; what sweep.json records of them."""
    if study is None:
        return {}
    attributes = {
        ATTR_SWEEP: space.name,
        ATTR_SWEEP_ID: folder.sweep_id,
        ATTR_SPACE_FILE: str(space.path),
        ATTR_PARENT_RUN_ID: str(parent.run_id),
    }
    directions = [objective.mode for objective in space.objective_list]
    optuna_study = create_study(study, directions=directions, attributes=attributes)
    tags = study.tags()
    if warm is not None and folder.is_new and not optuna_study.trials:
        seed_study(optuna_study, warm, study_distributions(space))
        tags.update(warm.tags())
        record = warm.record(best_metric_name(space.metric))
        parent.log_text(json.dumps(record, indent=1) + "\n", WARM_START_ARTIFACT)
        print(warm.describe(), flush=True)
    parent.set_tags(tags)
    parent.log_params(tags)
    return {key: value for key, value in tags.items() if key in (TAG_STUDY_NAME, TAG_STUDY_STORAGE)}


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
