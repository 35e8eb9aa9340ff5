"""Where a sweep driver (sweep.py, final.py) writes and connects: output root, Ray Tune storage,
MLflow tracking URI and experiment, Ray address; Tune's driver settings; the code's commit; the
data folder a sweep reads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lungsrad.assets.paths import DATA_ROOT, resolve_reference
from lungsrad.config import ExperimentConfig
from lungsrad.data.layout import archive_hint
from mlflow_tracking.store import TrackingTarget, open_experiment
from mlflow_tracking.uri import sqlite_uri
from tuning.cluster import in_ray_job

EXPERIMENT_STATE_PERIOD_S = 1  # seconds between saves of Tune's experiment state (at most)


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
    optuna_storage: str | None = None  # --optuna-storage URL (None: OUTPUT_ROOT/optuna.db)
    warm_start: str | None = None  # --warm-start SWEEP (id, folder or MLflow parent run id)


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
        optuna_storage=getattr(args, "optuna_storage", None),
        warm_start=getattr(args, "warm_start", None),
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


def data_root_for(
    configs: Sequence[ExperimentConfig], explicit: str | Path | None, root: Path
) -> Path | None:
    """--data (it wins over the configs' data.root), else None when every base config names a
    dataset, else the synthetic data folder."""
    if explicit is not None:
        # `--data fetch:icbhi`: the fetched database (one line with the fetch command if absent)
        explicit = resolve_reference(str(explicit), key=DATA_ROOT)
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
