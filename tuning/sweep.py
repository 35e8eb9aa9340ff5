"""Sweep driver: `python tuning/sweep.py --space search_spaces/NAME.yaml`, locally or as the
entrypoint of `ray job submit --working-dir . -- python tuning/sweep.py ...`.

Validates the search space, checks MLflow, prepares data and the shared feature set, then runs a
Ray Tune experiment (Optuna TPE / grid / one-at-a-time, optional ASHA) whose trials are
`tuning.trainable.train_trial`; at the end exports best_config.yaml and a summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file (`python tuning/sweep.py`, `ray job submit ... python tuning/sweep.py`):
    # the repository root, not tuning/, must be importable.
    _REPO_ROOT = str(Path(__file__).resolve().parents[1])
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path[0] = _REPO_ROOT
    elif _REPO_ROOT not in sys.path:
        sys.path.insert(0, _REPO_ROOT)

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lungsrad.config import ExperimentConfig, dump_config, file_lock, write_text_atomic
from lungsrad.data.layout import archive_hint
from lungsrad.errors import USER_ERRORS, UserError
from mlflow_tracking.run_writer import RunTracker
from mlflow_tracking.store import TrackingTarget, configure_http_retries, open_experiment
from mlflow_tracking.tags import (
    RUN_DESCRIPTION_TAG,
    TAG_BASE_VALUES,
    TAG_GIT_COMMIT,
    TAG_METRIC,
    TAG_PROTOCOL,
    TAG_ROLE,
    TAG_SEARCH_SPACE,
    TAG_SWEEP,
    TAG_SWEEP_DIR,
    TAG_SWEEP_ID,
)
from mlflow_tracking.uri import redact_text, sqlite_uri
from tuning.interrupts import (
    SweepInterrupted,
    catch_interrupts,
    received_signal,
    resume_command,
    tune_running,
)
from tuning.search_space import (
    SearchSpace,
    load_search_space,
    short_parameter_names,
    space_summary,
)

EXIT_BAD_INPUT = 2
EXIT_NO_RESULT = 1
STATE_FILE = "sweep.json"
DRIVER_LOCK_FILE = ".driver.lock"  # in the sweep folder, held by its running driver
EXPERIMENT_STATE_PERIOD_S = 1  # seconds between saves of Tune's experiment state (at most)
SYNTHETIC_RECORDINGS = 24  # size of the synthetic dataset the embedded default generates
SYNTHETIC_SEED = 0
PARENT_RUN_WAIT_S = 60.0  # how long a starting driver retries a busy MLflow store
INTERRUPT_DELIVERY_S = 30.0  # how long an interrupted driver waits for MLflow


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class DriverSettings:
    """Where a sweep (or final.py's seed runs) writes and connects."""

    output_root: Path  # default home of mlflow.db, synthetic data, ray_results
    storage_path: Path  # Ray Tune storage (shared by all nodes of a cluster)
    tracking_uri: str  # may hold credentials; never printed as is
    experiment: str  # MLflow experiment
    ray_address: str | None  # None: RAY_ADDRESS or a new local Ray
    resume: bool = False
    resume_id: str | None = None  # --resume SWEEP_ID (None: the only sweep of that name)
    role: str = "sweep"  # MLflow role of the parent run: sweep | final


def set_tune_driver_defaults() -> None:
    """Ray Tune settings of a sweep driver. Progress comes from tuning.callbacks.ProgressPrinter:
    turn off Tune's status tables and its warning about frequent experiment snapshots (every
    epoch checkpoints on purpose), and save the experiment state often. Values set in the
    environment are kept."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune saves the experiment state (which trials finished) at most every 10+ s by default;
    # a driver killed inside that window would re-run a finished trial on --resume. The state
    # of a sweep is small (trial table + searcher), so it is saved every step of at least 1 s.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(EXPERIMENT_STATE_PERIOD_S))
    # SIGINT goes to the driver's own handler (tuning.interrupts), which stops Tune through its
    # SIGUSR1 handler and remembers which signal came (SIGINT 130, SIGTERM 143).
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def default_output_root(explicit: str | Path | None) -> Path:
    """--output-root, else ./runs; inside a Ray job (temporary working dir) ~/lungsrad_runs."""
    from tuning.cluster import in_ray_job

    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    if in_ray_job():
        return (Path.home() / "lungsrad_runs").resolve()
    return Path("runs").resolve()


def make_settings(args: argparse.Namespace, *, experiment: str, role: str) -> DriverSettings:
    """DriverSettings from the common command-line flags."""
    root = default_output_root(args.output_root)
    uri = (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(root / "mlflow.db")
    )
    note = relative_sqlite_note(uri)
    if note:
        print(note, flush=True)
    storage = (
        Path(args.storage_path).expanduser().resolve()
        if args.storage_path
        else root / "ray_results"
    )
    return DriverSettings(
        output_root=root,
        storage_path=storage,
        tracking_uri=uri,
        experiment=args.experiment or experiment,
        ray_address=args.ray_address,
        resume=getattr(args, "resume", None) is not None,
        resume_id=getattr(args, "resume", None) or None,
        role=role,
    )


def relative_sqlite_note(uri: str) -> str | None:
    """A note when a sqlite URI's path is relative (three slashes): it is read from the current
    folder, which is rarely what was meant; None for an absolute one (four slashes)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/"):
        return None
    relative = uri[len(prefix) :]
    if not relative or relative == ":memory:":
        return None
    absolute = Path(relative).expanduser().resolve()
    return (
        f"note: tracking URI '{uri}' is relative to the current folder: {absolute}; an absolute "
        f"path takes four slashes: {prefix}/{str(absolute).lstrip('/')}"
    )


def open_tracking(settings: DriverSettings) -> TrackingTarget:
    """Checks the tracking URI and opens the experiment (artifacts under OUTPUT_ROOT for
    database stores); ValueError in one line naming the URI when it is not usable."""
    return open_experiment(
        settings.tracking_uri,
        settings.experiment,
        artifact_root=settings.output_root / "mlflow-artifacts",
    )


def git_commit() -> str:
    """HEAD commit of the code's checkout (+ '-dirty' with local changes), or 'unknown'.

    $LUNGSRAD_GIT_COMMIT wins: `ray job submit --working-dir` uploads no .git folder, so the
    submitting shell passes the commit (README, cluster use).
    """
    if os.environ.get("LUNGSRAD_GIT_COMMIT"):
        return os.environ["LUNGSRAD_GIT_COMMIT"]
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty and commit else (commit or "unknown")


# ---------------------------------------------------------------------------------------------
# Data


def data_root_for(
    configs: Sequence[ExperimentConfig], explicit: str | Path | None, root: Path
) -> Path | None:
    """--data (it wins over the configs' data.root), else None when every base config names a
    dataset, else the synthetic data folder."""
    if explicit is not None:
        path = Path(explicit).expanduser().resolve()
        if path.is_file():
            raise NotADirectoryError(f"--data {path} is a file, not a folder{archive_hint(path)}")
        if not path.is_dir():
            raise FileNotFoundError(f"--data folder not found: {path}")
        return path
    if all(config.data.root is not None for config in configs):
        return None
    return root / "synthetic_data"


def synthetic_data_folder(settings: DriverSettings) -> Path:
    """Where the embedded default's synthetic dataset is generated."""
    return settings.output_root / "synthetic_data"


def ensure_synthetic_data(folder: Path) -> None:
    """Generates the embedded default's synthetic dataset on first use."""
    from lungsrad.data.synthetic import write_synthetic_dataset

    if (folder / "ICBHI_challenge_train_test.txt").is_file():
        return
    print(f"generating synthetic data ({SYNTHETIC_RECORDINGS} recordings) in {folder}", flush=True)
    write_synthetic_dataset(folder, num_recordings=SYNTHETIC_RECORDINGS, seed=SYNTHETIC_SEED)


def shared_feature_set(space: SearchSpace) -> Any:
    """The FeatureSet every trial shares, or None when trials need different features.

    Trials that sweep feature settings (data.*) or variants with different data sections build
    their own features (from the on-disk cache) instead.
    """
    from lungsrad.data.features import SETTINGS_OUTSIDE_FINGERPRINT, build_feature_set

    split_only = {f"data.{name}" for name in SETTINGS_OUTSIDE_FINGERPRINT} - {
        "data.root",
        "data.split_file",
        "data.cache_dir",
    }
    swept = {path for p in space.parameters for path in p.config_paths}
    if any(path.startswith("data.") and path not in split_only for path in swept):
        print("trials sweep data settings: each trial builds its own features", flush=True)
        return None
    data_sections = {
        json.dumps(
            {k: v for k, v in vars(config.data).items() if f"data.{k}" not in split_only},
            sort_keys=True,
            default=str,
        )
        for config in space.variants.values()
    }
    if len(data_sections) > 1:
        print(
            "variants use different data settings: each trial builds its own features", flush=True
        )
        return None
    data = space.base_config.data
    started = time.perf_counter()
    feature_set = build_feature_set(data, data.root, show_progress=True)
    print(
        f"features: {len(feature_set)} cycles, fingerprint {feature_set.fingerprint[:12]} "
        f"({time.perf_counter() - started:.1f} s; shared with every trial through Ray's object "
        "store)",
        flush=True,
    )
    return feature_set


# ---------------------------------------------------------------------------------------------
# The sweep folder


@dataclass(frozen=True)
class SweepFolder:
    """A Tune experiment folder plus our sweep.json (sweep id, parent run id, experiment)."""

    path: Path
    sweep_id: str  # recorded in sweep.json and on the parent run; --resume SWEEP_ID finds it
    parent_run_id: str | None
    is_new: bool


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _recorded_sweep_id(folder: Path) -> str:
    # Folders of older versions record no id: their name stands for it.
    return str(_read_state(folder).get("sweep_id") or folder.name)


def locate_sweep_folder(space: SearchSpace, settings: DriverSettings) -> SweepFolder:
    """A new folder named by time and a random sweep id (unique even for sweeps started in the
    same second), or with --resume the one sweep of this name (and id, when given)."""
    if not settings.resume:
        sweep_id = secrets.token_hex(4)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = settings.storage_path / f"{space.name}_{stamp}_{sweep_id}"
        return SweepFolder(path=path, sweep_id=sweep_id, parent_run_id=None, is_new=True)
    folder = _resumed_folder(space, settings)
    state = _read_state(folder)
    if state.get("experiment") != settings.experiment:
        raise UserError(
            f"--resume: {folder} logged to MLflow experiment '{state.get('experiment')}', not "
            f"'{settings.experiment}'; pass --experiment {state.get('experiment')}"
        )
    return SweepFolder(
        path=folder,
        sweep_id=_recorded_sweep_id(folder),
        parent_run_id=state.get("parent_run_id"),
        is_new=False,
    )


def _resumed_folder(space: SearchSpace, settings: DriverSettings) -> Path:
    """The folder --resume [SWEEP_ID] names; several matches are refused, never guessed."""
    # By the recorded name: the glob alone would also match a space named "<name>_more".
    candidates = sorted(
        p
        for p in settings.storage_path.glob(f"{space.name}_*")
        if _read_state(p).get("sweep") == space.name
    )
    wanted = settings.resume_id
    if wanted:
        candidates = [p for p in candidates if wanted in (_recorded_sweep_id(p), p.name)]
    if not candidates:
        which = f" with id '{wanted}'" if wanted else ""
        raise FileNotFoundError(
            f"--resume: no earlier sweep '{space.name}'{which} under {settings.storage_path}; "
            "run without --resume to start one (or pass the --storage-path it used)"
        )
    if len(candidates) > 1:
        listed = ", ".join(f"{_recorded_sweep_id(p)} ({p.name})" for p in candidates)
        raise UserError(
            f"--resume: {len(candidates)} sweeps '{space.name}' under {settings.storage_path}: "
            f"{listed}; choose one with --resume SWEEP_ID"
        )
    return candidates[0]


@contextlib.contextmanager
def driver_lock(folder: SweepFolder) -> Iterator[None]:
    """Held by the driver of the sweep while it runs: a second driver (--resume of a sweep that
    is still running) is refused in one line. The kernel drops it when the driver dies. A new
    folder that never got its sweep.json (the sweep stopped before its parent run) is removed."""
    import shutil

    folder.path.mkdir(parents=True, exist_ok=not folder.is_new)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(folder.path / DRIVER_LOCK_FILE, blocking=False))
        except BlockingIOError:
            raise UserError(
                f"--resume: sweep {folder.sweep_id} ({folder.path}) is still running (its "
                "driver holds the folder's lock); wait until it ends or stop it first"
            ) from None
        try:
            yield
        finally:
            if folder.is_new and not (folder.path / STATE_FILE).exists():
                shutil.rmtree(folder.path, ignore_errors=True)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# ---------------------------------------------------------------------------------------------
# Tune


def _search_algorithm(space: SearchSpace) -> Any:
    if space.search == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=space.search_seed))
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune applies max_concurrent_trials only to Searchers; the grid generator takes it itself.
    return BasicVariantGenerator(
        random_state=space.search_seed, max_concurrent=space.max_concurrent_trials or 0
    )


def _scheduler(space: SearchSpace) -> Any:
    if space.scheduler.kind != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    from lungsrad.metrics import EPOCH

    return ASHAScheduler(
        time_attr=EPOCH,
        max_t=space.scheduler.max_t or space.max_epochs,
        grace_period=space.scheduler.grace_period,
        reduction_factor=space.scheduler.reduction_factor,
    )


def build_tuner(
    space: SearchSpace,
    folder: SweepFolder,
    settings: DriverSettings,
    *,
    feature_set: Any,
    context: Any,
    callbacks: Sequence[Any] = (),
) -> Any:
    """A new Tuner, or the restored one of a resumed sweep folder."""
    from ray import tune

    from tuning.callbacks import MlflowLogger, ProgressPrinter
    from tuning.trainable import best_metric_name, train_trial

    trainable = tune.with_resources(
        tune.with_parameters(train_trial, feature_set=feature_set, context=context),
        space.resources.as_dict(),
    )
    if not folder.is_new and tune.Tuner.can_restore(str(folder.path)):
        return tune.Tuner.restore(
            str(folder.path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    return tune.Tuner(
        trainable,
        param_space=space.param_space(),
        tune_config=tune.TuneConfig(
            metric=best_metric_name(space.metric),
            mode=space.mode,
            search_alg=_search_algorithm(space),
            scheduler=_scheduler(space),
            num_samples=space.num_samples,
            max_concurrent_trials=space.max_concurrent_trials if space.search == "tpe" else None,
            trial_dirname_creator=_trial_dirname,
            # A finished trial's process (torch and compiled kernels loaded) runs
            # the next trial: saves seconds of imports per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=folder.path.name,
            storage_path=str(folder.path.parent),
            failure_config=tune.FailureConfig(max_failures=space.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
            # MLflow first: a trial's progress line is printed once its run holds the event.
            callbacks=[MlflowLogger(space), ProgressPrinter(space), *callbacks],
        ),
    )


# ---------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished sweep produced."""

    folder: Path
    tracking: TrackingTarget
    parent_run_id: str
    outcomes: list  # tuning.results.TrialOutcome
    best: Any  # tuning.results.BestChoice | None
    best_config_path: Path | None
    summary_path: Path
    seconds: float
    view_key: str | None = None  # share key of the experiment's saved view of this sweep
    cost: Any = None  # tuning.cost.SweepCost
    paired_table: str = ""  # one_at_a_time: each point against the base, paired by seed


def _parent_tracker(
    space: SearchSpace,
    settings: DriverSettings,
    target: TrackingTarget,
    folder: SweepFolder,
    commit: str,
) -> RunTracker:
    if folder.parent_run_id is not None:
        tracker = RunTracker(target, run_id=folder.parent_run_id)
        try:
            run = target.client().get_run(folder.parent_run_id)
        except Exception:
            raise UserError(
                f"--resume: the sweep's MLflow parent run {folder.parent_run_id} is not in "
                f"'{target.display_uri}' (experiment '{target.experiment_name}'); pass the "
                "--tracking-uri the sweep started with"
            ) from None
        if run.info.status != "RUNNING":
            target.client().update_run(folder.parent_run_id, status="RUNNING")
        return tracker
    tracker = RunTracker(
        target,
        run_name=parent_run_name(space, settings.role),
        tags={
            RUN_DESCRIPTION_TAG: f"{settings.role} '{space.name}' running; results in "
            f"{folder.path}",
            TAG_ROLE: settings.role,
            TAG_SWEEP: space.name,
            TAG_SWEEP_DIR: str(folder.path),
            TAG_SEARCH_SPACE: str(space.path),
            TAG_PROTOCOL: space.protocol,
            TAG_METRIC: space.metric,
            TAG_GIT_COMMIT: commit,
            TAG_BASE_VALUES: json.dumps(space.base_labels(), sort_keys=True),
            TAG_SWEEP_ID: folder.sweep_id,
        },
    )
    tracker.log_params(space_summary(space))
    tracker.log_text(space.text, f"search_space/{space.path.name}")
    for name, config in space.variants.items():
        tracker.log_text(dump_config(config), f"base_configs/{name}.yaml")
    # Several drivers starting at once may find a SQLite store busy for a moment.
    if not tracker.deliver(timeout_s=PARENT_RUN_WAIT_S):
        raise UserError(
            f"MLflow at '{target.display_uri}' did not accept the sweep's parent run "
            f"({tracker.last_error})"
        )
    return tracker


def run_sweep(
    space: SearchSpace,
    settings: DriverSettings,
    *,
    callbacks: Sequence[Any] = (),
    num_cpus: int | None = None,
    export_best: bool = True,
    check_inputs: bool = True,
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
        from tuning.preflight import check_space_inputs

        check_space_inputs(space, generated_data=synthetic_data_folder(settings))
    # Ray loads only once the checks above have passed.
    from tuning.cluster import connect, disconnect

    with driver_lock(folder):
        cluster = connect(settings.ray_address, num_cpus=num_cpus)
        try:
            print(cluster.describe(), flush=True)
            parent, outcomes, view_key = _run_tune(
                space, settings, folder, target, callbacks=callbacks
            )
        finally:
            disconnect(cluster)
        return _export(
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


def _write_state(
    folder: SweepFolder, space: SearchSpace, target: TrackingTarget, **extra: Any
) -> None:
    write_text_atomic(
        folder.path / STATE_FILE,
        json.dumps(
            {
                "sweep": space.name,
                "sweep_id": folder.sweep_id,
                "search_space": str(space.path),
                "experiment": target.experiment_name,
                "experiment_id": target.experiment_id,
                "tracking_uri": target.display_uri,
                **extra,
            },
            indent=1,
        )
        + "\n",
    )


def _run_tune(
    space: SearchSpace,
    settings: DriverSettings,
    folder: SweepFolder,
    target: TrackingTarget,
    *,
    callbacks: Sequence[Any],
) -> tuple[RunTracker, list[Any], str | None]:
    """Resources check, data, parent run and saved view, Tune until every trial has ended, then
    the `reseed` step; the parent run, the outcomes of every trial and the view's share key.
    A signal once the parent run exists marks the runs KILLED and raises SweepInterrupted
    (tuning.interrupts) with the sweep id that --resume takes."""
    from tuning.callbacks import bind_tracking
    from tuning.cluster import check_resources
    from tuning.cost import COST_FOLDER
    from tuning.trainable import SweepContext

    # Before data and features: a trial no node can hold fails in seconds, not minutes.
    check_resources(space.resources)
    data_root = space.base_config.data.root
    if data_root is not None and Path(data_root) == synthetic_data_folder(settings):
        with file_lock(settings.output_root / ".synthetic_data.lock"):  # concurrent sweeps
            ensure_synthetic_data(Path(data_root))
    feature_set = shared_feature_set(space)
    from tuning.folds import check_splits

    check_splits(space, feature_set)  # a fold without test cycles fails here, not in a trial
    commit = git_commit()
    parent = _parent_tracker(space, settings, target, folder, commit)
    assert parent.run_id is not None
    _write_state(folder, space, target, parent_run_id=parent.run_id, git_commit=commit)
    try:
        bind_tracking(
            target,
            parent.run_id,
            role="trial" if settings.role == "sweep" else "final_seed",
            git_commit=commit,
            staging=folder.path / ".mlflow_staging",
            sweep_id=folder.sweep_id,
            cost_folder=folder.path / COST_FOLDER,
        )
        total = space.num_trials()
        print(
            f"{settings.role} '{space.name}' (sweep id {folder.sweep_id}): "
            f"{total if total is not None else '?'} trials ({space.search}, scheduler "
            f"{space.scheduler.kind}, protocol {space.protocol}, metric {space.metric} "
            f"{space.mode}); "
            f"results in {folder.path}; MLflow '{target.display_uri}' experiment "
            f"'{target.experiment_name}' parent run {parent.run_id}",
            flush=True,
        )
        view_key = write_sweep_view(space, target, folder.sweep_id, settings.role)
        print(f"  view: {mlflow_ui_hint(target, view_key)}", flush=True)
        context = SweepContext(space=space)
        tuner = build_tuner(
            space, folder, settings, feature_set=feature_set, context=context, callbacks=callbacks
        )
        with tune_running():
            grid = tuner.fit()
        # Tune marks the trials it stopped on a signal TERMINATED: only the signal tells.
        unfinished = len(grid) - grid.num_terminated - grid.num_errors
        if received_signal() is not None or unfinished > 0:
            raise SweepInterrupted(received_signal() or signal.SIGINT, f"{folder.path}")
        from tuning.results import collect_outcomes

        outcomes = collect_outcomes(grid, space)
        if space.reseed is not None:
            outcomes += _run_reseed(space, outcomes, folder, feature_set, context)
    except KeyboardInterrupt as error:
        interrupted = (
            error if isinstance(error, SweepInterrupted) else SweepInterrupted(signal.SIGINT)
        )
        _record_interrupt(space, folder, target, parent, interrupted, role=settings.role)
        raise interrupted from None
    return parent, outcomes, view_key


def _record_interrupt(
    space: SearchSpace,
    folder: SweepFolder,
    target: TrackingTarget,
    parent: RunTracker,
    interrupted: SweepInterrupted,
    *,
    role: str,
) -> None:
    """What an interrupted sweep leaves: its unfinished child runs and the parent run KILLED,
    sweep.json saying so (Tune saved its own state), no summary and no best_config.yaml."""
    from tuning.callbacks import deliver_pending

    interrupted.sweep_id = folder.sweep_id
    deliver_pending(timeout_s=INTERRUPT_DELIVERY_S)  # finished trials' FINISHED lands first
    killed = _kill_running_children(target, str(parent.run_id))
    parent.set_tags(
        {
            RUN_DESCRIPTION_TAG: f"**Interrupted** by {interrupted.signal_name}: {killed} "
            f"unfinished trial run(s) KILLED; no best configuration exported. Continue with "
            f"`--resume {folder.sweep_id}`; results in {folder.path}",
        }
    )
    parent.finish("KILLED", timeout_s=INTERRUPT_DELIVERY_S)
    state = _read_state(folder.path)
    state["interrupted"] = {
        "signal": interrupted.signal_name,
        "time": datetime.now().isoformat(timespec="seconds"),
        "killed_runs": killed,
    }
    write_text_atomic(folder.path / STATE_FILE, json.dumps(state, indent=1) + "\n")
    print(
        f"{role} '{space.name}' interrupted by {interrupted.signal_name}: "
        f"{killed} unfinished trial run(s) and the parent run {parent.run_id} marked KILLED in "
        f"MLflow; state saved in {folder.path}; no best_config.yaml or summary written",
        file=sys.stderr,
        flush=True,
    )


def _kill_running_children(target: TrackingTarget, parent_run_id: str) -> int:
    """Marks every RUNNING child run of the parent KILLED (trial status 'interrupted'); how many.
    --resume sets a continued trial's run RUNNING again."""
    from mlflow_tracking.tags import TAG_TRIAL_STATUS

    client = target.client()
    try:
        runs = client.search_runs(
            [target.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
            "and attributes.status = 'RUNNING'",
        )
        for run in runs:
            client.set_tag(run.info.run_id, TAG_TRIAL_STATUS, "interrupted")
            client.set_terminated(run.info.run_id, status="KILLED")
    except Exception as error:  # MLflow down: the interrupt must still end cleanly
        text = str(error).strip()
        reason = redact_text(text.splitlines()[0] if text else "", target.uri)
        print(
            f"warning: could not mark the trial runs KILLED in MLflow "
            f"({type(error).__name__}: {reason})",
            file=sys.stderr,
        )
        return 0
    return len(runs)


def _export(
    space: SearchSpace,
    folder: SweepFolder,
    target: TrackingTarget,
    parent: RunTracker,
    outcomes: list[Any],
    *,
    role: str,
    started: float,
    export_best: bool,
    view_key: str | None = None,
) -> SweepOutcome:
    """Summary.md and (for sweeps) best_config.yaml of the trials' outcomes, on disk and on the
    parent run."""
    from mlflow_tracking.tags import NOT_DEGENERATE, TAG_DEGENERATE
    from tuning.cost import COST_FOLDER, load_costs, resource_units, sweep_cost
    from tuning.results import (
        PAIRED_FILE,
        SUMMARY_FILE,
        choose_best,
        points_against_base_markdown,
        summarize_configurations,
        summary_markdown,
    )

    best = choose_best(outcomes, mode=space.mode)
    costs = load_costs(folder.path / COST_FOLDER)
    cost = sweep_cost(
        costs,
        configurations=len(summarize_configurations(outcomes, mode=space.mode)),
        best_trial_ids=[member.trial_id for member in best.members] if best else [],
        wall_seconds=time.perf_counter() - started,
        device=resource_units(space.resources.as_dict())[0],
    )
    summary = summary_markdown(space, outcomes, best, costs=costs, cost=cost)
    summary_path = folder.path / SUMMARY_FILE
    write_text_atomic(summary_path, summary)
    parent.log_text(summary, SUMMARY_FILE)
    paired = points_against_base_markdown(space, outcomes)
    if paired:
        parent.log_text(paired, PAIRED_FILE)
    best_path = None
    if best is not None and export_best:
        best_path = _export_best(space, folder, parent, best)
    parent.set_tags({RUN_DESCRIPTION_TAG: best_description(space, best, outcomes, role)})
    if best is not None:
        parent.log_metrics(best_metrics(space, best), step=0)
        parent.set_tags(
            {
                "lungsrad.best_trial_id": best.representative.trial_id,
                TAG_DEGENERATE: best.degenerate or NOT_DEGENERATE,
            }
        )
    parent.log_metrics(cost.metrics(), step=0)
    done = sum(outcome.status == "done" for outcome in outcomes)
    parent.set_tags(
        {"lungsrad.trials_done": str(done), "lungsrad.trials_total": str(len(outcomes))}
    )
    if export_best:
        parent.finish("FINISHED" if best is not None else "FAILED")
    else:
        parent.flush(force=True)
    return SweepOutcome(
        folder=folder.path,
        tracking=target,
        parent_run_id=str(parent.run_id),
        outcomes=outcomes,
        best=best,
        best_config_path=best_path,
        summary_path=summary_path,
        seconds=time.perf_counter() - started,
        view_key=view_key,
        cost=cost,
        paired_table=paired,
    )


def _run_reseed(
    space: SearchSpace,
    outcomes: list,
    folder: SweepFolder,
    feature_set: Any,
    context: Any,
) -> list:
    """The re-seeded trials of `reseed` (tuning.reseed); an interrupt raises SweepInterrupted."""
    from tuning.reseed import run_reseed

    return run_reseed(space, outcomes, folder.path, feature_set=feature_set, context=context)


def parent_run_name(space: SearchSpace, role: str) -> str:
    """A parent run name that says what was swept, e.g. "smoke: tpe over temperature, sigma"."""
    if role != "sweep":
        return f"{space.name}: {role} seeds {list(space.seeds)}"[:240]
    swept = list(short_parameter_names([p.name for p in space.parameters]).values())
    if space.has_variants:
        swept.insert(0, f"{len(space.variants)} variants")
    return f"{space.name}: {space.search} over {', '.join(swept) or 'seeds'}"[:240]


def best_metrics(space: SearchSpace, best: Any) -> dict[str, float]:
    """Parent-run metrics of the winner (shown in the runs table's metric columns)."""
    import statistics

    from lungsrad.metrics import REPORT_SCORE
    from tuning.trainable import best_metric_name

    scores = [m.report_score for m in best.members]
    return {
        best_metric_name(space.metric): best.mean_value,
        f"best_config/{REPORT_SCORE}": statistics.fmean(scores),
        "best_config/seeds": float(len(best.members)),
    }


def best_description(space: SearchSpace, best: Any, outcomes: Sequence[Any], role: str) -> str:
    """The parent run's description (markdown, shown on its run page): the winner and its score,
    or that no trial finished."""
    from tuning.trainable import best_metric_name

    done = sum(outcome.status == "done" for outcome in outcomes)
    if best is None:
        head = "**No trial finished**: see the failed child runs' `lungsrad.failure` tag"
    else:
        seeds = sorted(member.resolved.seed for member in best.members)
        name = (
            best.representative.resolved.describe_config()
            if role == "sweep"
            else f"config '{best.config.name}'"
        )
        head = (
            f"**{'Best configuration' if role == 'sweep' else 'Final training'}**: {name}  \n"
            f"mean `{best_metric_name(space.metric)}` = **{best.mean_value:.2f}** over seed(s) "
            f"{seeds}; best trial run **{best.representative.resolved.describe_short()}** "
            f"(Tune trial `{best.representative.trial_id}`)"
        )
        if best.degenerate:
            head += f"  \n**Warning**: {best.degenerate}"
    return (
        f"{head}  \n{done} of {len(outcomes)} trials finished; search `{space.search}`, "
        f"protocol `{space.protocol}`. See the artifacts summary.md and report/."
    )


def _export_best(space: SearchSpace, folder: SweepFolder, parent: RunTracker, best: Any) -> Path:
    from tuning.results import export_best_config, selection_record
    from tuning.trainable import best_metric_name

    best_path = export_best_config(
        best,
        folder.path,
        header=(
            f"Best configuration of sweep '{space.name}' ({folder.path.name}): "
            f"{best.representative.resolved.describe_config()}\n"
            f"mean {best_metric_name(space.metric)} over {len(best.members)} seed(s): "
            f"{best.mean_value:.4f} (protocol {space.protocol}); MLflow parent run "
            f"{parent.run_id}\n"
            "Train it on several seeds: "
            "python tuning/final.py --config THIS_FILE --seeds 0 1 2 3 4"
        ),
        record={
            **selection_record(
                best, metric=best_metric_name(space.metric), reseeded=space.reseed is not None
            ),
            # final.py refuses this file without a checkpoint, as the sweep did.
            **({"requires_pretrained": True} if space.requires_pretrained else {}),
        },
    )
    parent.log_artifacts(_staged(best_path, folder.path / ".mlflow_best"))
    parent.set_tags({"lungsrad.best_config": str(best_path)})
    return best_path


def _staged(file: Path, folder: Path) -> Path:
    """A folder holding only `file` under the name best_config.yaml (for log_artifacts)."""
    import shutil

    from tuning.results import BEST_CONFIG_FILE

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy2(file, folder / BEST_CONFIG_FILE)
    return folder


def sweep_view(space: SearchSpace, sweep_id: str, role: str = "sweep") -> Any:
    """The saved view of a sweep's runs page: the sweep metric, every swept parameter and the
    seed, the report scores, the trial status and degenerate tags; best first; only this sweep's
    runs. A final's view starts with the mean Score, Sp and Se over seeds (its parent run's
    Table 1 metrics), so the answer is the top row, not its best seed."""
    from lungsrad.metrics import (
        REPORT_SCORE,
        REPORT_SCORE_2CLASS,
        REPORT_SENSITIVITY,
        REPORT_SPECIFICITY,
    )
    from mlflow_tracking.saved_view import SweepView, swept_param_keys
    from mlflow_tracking.tags import TAG_DEGENERATE, TAG_TRIAL_STATUS, TAG_VARIANT
    from tuning.results import mean_metric_name
    from tuning.trainable import best_metric_name

    paths = [path for parameter in space.parameters for path in parameter.config_paths]
    metric = best_metric_name(space.metric)
    reported = (REPORT_SCORE, REPORT_SPECIFICITY, REPORT_SENSITIVITY, REPORT_SCORE_2CLASS)
    means: tuple[str, ...] = ()
    if role != "sweep":
        means = tuple(mean_metric_name(key) for key in (REPORT_SPECIFICITY, REPORT_SENSITIVITY))
        metric, reported = mean_metric_name(REPORT_SCORE), (metric, *reported)
    return SweepView(
        name=f"{space.name} {sweep_id}: " + ("best first" if role == "sweep" else "mean first"),
        metric=metric,
        maximize=space.mode == "max",
        other_metrics=(*means, *reported),
        params=swept_param_keys(paths),
        tags=(TAG_TRIAL_STATUS, TAG_DEGENERATE, *((TAG_VARIANT,) if space.has_variants else ())),
        search_filter=f"tags.`{TAG_SWEEP_ID}` = '{sweep_id}'",
        chart_metric=best_metric_name(space.metric),
    )


def write_sweep_view(
    space: SearchSpace, target: TrackingTarget, sweep_id: str, role: str = "sweep"
) -> str | None:
    """Stores the sweep's saved view on its experiment; its share key, or None (with one warning
    line) when the tracking store refuses the experiment tag."""
    from mlflow_tracking.saved_view import sweep_share_key, write_saved_view

    key = sweep_share_key(sweep_id)
    stored = write_saved_view(
        target.client(), target.experiment_id, key, sweep_view(space, sweep_id, role), target.uri
    )
    return key if stored else None


def mlflow_ui_hint(target: TrackingTarget, view_key: str | None = None) -> str:
    """How to look at the runs: the experiment's runs page in the "Model training" view, with the
    sweep's saved view when it was stored. MLflow 3.x UIs open every experiment in their "GenAI"
    view unless the address asks for "Model training", and apply a saved view only on the
    /runs route."""
    from mlflow_tracking.saved_view import ui_hint

    return ui_hint(target.display_uri, target.experiment_id, view_key)


def print_outcome(outcome: SweepOutcome, *, role: str = "sweep") -> None:
    """The closing lines: counts, best trial, where best_config.yaml and the runs are."""
    done = sum(o.status == "done" for o in outcome.outcomes)
    failed = len(outcome.outcomes) - done
    print(
        f"{role} finished in {outcome.seconds:.0f} s: {len(outcome.outcomes)} trials, {done} done, "
        f"{failed} failed"
    )
    if outcome.best is not None and role == "sweep":
        from tuning.results import all_degenerate_note

        described = outcome.best.representative.resolved.describe_config()
        seeds = len(outcome.best.members)
        flag = f"; {outcome.best.degenerate}" if outcome.best.degenerate else ""
        print(f"best: {described} (mean {outcome.best.mean_value:.2f} over {seeds} seed(s)){flag}")
        every = all_degenerate_note(outcome.best)
        if every:
            print(f"warning: {every[0].lower()}{every[1:]}")
    if outcome.cost is not None:
        print(f"cost: {outcome.cost.one_line()}")
    if outcome.best_config_path is not None:
        print(f"best config: {outcome.best_config_path}")
    print(f"summary: {outcome.summary_path}")
    print(
        f"MLflow: {outcome.tracking.display_uri}, experiment '{outcome.tracking.experiment_name}', "
        f"parent run {outcome.parent_run_id}"
    )
    print(f"  view: {mlflow_ui_hint(outcome.tracking, outcome.view_key)}")
    if outcome.paired_table:
        print(f"\n{outcome.paired_table}", end="")


# ---------------------------------------------------------------------------------------------
# Command line


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by sweep.py and final.py."""
    parser.add_argument(
        "--data",
        default=None,
        help="ICBHI_final_database folder (unzipped); wins over the config's data.root (default: "
        "data.root, else synthetic data generated under OUTPUT_ROOT)",
    )
    parser.add_argument(
        "--split-file",
        default=None,
        metavar="PATH",
        help="official split file ICBHI_challenge_train_test.txt; wins over data.split_file "
        "(default: data.split_file, else the file of that name in the data folder)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="set a config key on every base config, e.g. model.checkpoint=/abs/DASS_small.pth "
        "(repeatable; wins over the file)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="SWEEP_ID",
        help="continue an interrupted run of this command (finished trials are kept); SWEEP_ID "
        "(printed at its start and when it stops, in its sweep.json) is needed when the storage "
        "path holds several",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:////ABS/OUTPUT_ROOT/mlflow.db; a sqlite path after three slashes is relative)",
    )
    parser.add_argument("--experiment", default=None, help="MLflow experiment name")
    parser.add_argument(
        "--storage-path",
        default=None,
        help="Ray Tune storage folder, shared by all nodes (default: OUTPUT_ROOT/ray_results)",
    )
    parser.add_argument(
        "--output-root",
        default=None,
        help="folder for mlflow.db, synthetic data and results (default: ./runs; in a Ray job "
        "~/lungsrad_runs)",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else start a local Ray on 127.0.0.1)",
    )


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from --set KEY=VALUE (YAML values) and --split-file (absolute)."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in args.set or []:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE (a dotted config path), got {item!r}")
        key, text = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(text)
    if args.split_file is not None:
        path = Path(args.split_file).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"--split-file not found: {path}")
        overrides["data.split_file"] = str(path)
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """The sweep.py argument parser."""
    parser = argparse.ArgumentParser(
        prog="tuning/sweep.py", description="Run a Lung-SRAD hyper-parameter sweep on Ray Tune."
    )
    parser.add_argument("--space", required=True, help="search-space YAML (search_spaces/*.yaml)")
    add_common_arguments(parser)
    return parser


def run_command(
    function: Any, uri: str | None, *, script: str = "tuning/sweep.py", argv: Sequence[str] = ()
) -> int:
    """Runs a CLI body; user errors become one line on stderr and exit status 2; SIGINT and
    SIGTERM stop the sweep (exit 130 / 143) with the command that continues it."""
    try:
        with catch_interrupts():
            return function()
    except USER_ERRORS as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if uri:
            message = redact_text(message, uri)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as error:
        interrupted = error if isinstance(error, SweepInterrupted) else SweepInterrupted(2)
        if interrupted.sweep_id is None:
            print(
                f"interrupted by {interrupted.signal_name} before any trial started: run the "
                "same command again",
                file=sys.stderr,
            )
        else:
            command = resume_command(script, argv, interrupted.sweep_id)
            print(
                f"continue with: {redact_text(command, uri) if uri else command}", file=sys.stderr
            )
        return interrupted.exit_status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of tuning/sweep.py."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        root = default_output_root(args.output_root)
        if args.output_root is None and root != Path("runs").resolve():
            print(f"running inside a Ray job: outputs go to {root} (set --output-root to change)")
        overrides = flag_overrides(args)
        preview = load_search_space(args.space, overrides=overrides)
        data_root = data_root_for(list(preview.variants.values()), args.data, root)
        space = (
            load_search_space(args.space, data_root=data_root, overrides=overrides)
            if data_root
            else preview
        )
        settings = make_settings(args, experiment=f"lungsrad-{space.name}", role="sweep")
        outcome = run_sweep(space, settings)
        print_outcome(outcome)
        return 0 if outcome.best is not None else EXIT_NO_RESULT

    return run_command(
        body, args.tracking_uri, script=invoked_script("tuning/sweep.py"), argv=command_argv(argv)
    )


def invoked_script(default: str) -> str:
    """The script as the user ran it (`tuning/sweep.py`, an absolute path), for printed
    commands; `default` when run otherwise (python -m, a test calling main)."""
    invoked = sys.argv[0] if sys.argv else ""
    return invoked if Path(invoked).name == Path(default).name else default


def command_argv(argv: Sequence[str] | None) -> list[str]:
    """The command's arguments (sys.argv's when main was called without any)."""
    return list(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
