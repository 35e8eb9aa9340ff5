"""The persistent Optuna study of a TPE sweep: its RDB storage (an SQLite file beside the MLflow
store by default, or --optuna-storage URL: PostgreSQL, MySQL), its name after the sweep, and the
user attributes that tie it to the sweep and its MLflow parent run (issue 27).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from lungsrad.errors import UserError, first_line
from mlflow_tracking.uri import redact_text, redact_uri, sqlite_path, sqlite_uri

STUDY_FILE = "optuna.db"  # in the output root, beside mlflow.db
STORAGE_FLAG = "--optuna-storage"
# Parent-run tags (and sweep.json keys) that name the study.
TAG_STUDY_NAME = "lungsrad.optuna_study"
TAG_STUDY_STORAGE = "lungsrad.optuna_storage"  # credentials masked
# The study's user attributes.
ATTR_SWEEP_ID = "sweep_id"
ATTR_SWEEP = "sweep"
ATTR_SPACE_FILE = "search_space"
ATTR_PARENT_RUN_ID = "mlflow_parent_run_id"


@dataclass(frozen=True)
class SweepStudy:
    """Where a sweep's Optuna study lives: the opened storage and the study's name."""

    storage_url: str  # may hold a password: print `shown_storage`
    name: str
    storage: Any  # optuna.storages.RDBStorage

    @property
    def shown_storage(self) -> str:
        """The storage URL with any password masked (printed, tagged, logged)."""
        return redact_uri(self.storage_url)

    def dashboard_command(self) -> str:
        """The command that opens the study in optuna-dashboard."""
        return f"optuna-dashboard {self.shown_storage}"

    def tags(self) -> dict[str, str]:
        """What the MLflow parent run records of the study."""
        return {TAG_STUDY_NAME: self.name, TAG_STUDY_STORAGE: self.shown_storage}


def storage_url(explicit: str | None, output_root: Path) -> str:
    """--optuna-storage URL, else the SQLite file optuna.db in the output root."""
    return explicit or sqlite_uri(output_root / STUDY_FILE)


def study_name(sweep: str, sweep_id: str) -> str:
    """The study of sweep `sweep` with id `sweep_id` (unique per sweep, found again on
    --resume)."""
    return f"{sweep}-{sweep_id}"


def open_storage(url: str) -> Any:
    """The RDB storage at `url` (tables created on first use); UserError in one line naming the
    flag and the URL (password masked) when it cannot be opened."""
    path = sqlite_path(url)
    if path is not None and path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as error:  # SQLAlchemy's and the drivers' errors: a bad URL or server
        reason = redact_text(first_line(error, empty=type(error).__name__), url)
        raise UserError(
            f"{STORAGE_FLAG} '{redact_uri(url)}': cannot open the Optuna storage ({reason}); "
            "pass sqlite:////ABS/PATH/optuna.db or postgresql://USER:PASSWORD@HOST/DB"
        ) from None


def open_sweep_study(
    url: str, *, sweep: str, sweep_id: str, recorded_storage: str | None = None
) -> SweepStudy:
    """Opens the storage of a sweep's study (before Ray starts). A resumed sweep whose
    sweep.json recorded another storage is refused: its study lives there."""
    if recorded_storage is not None and recorded_storage != redact_uri(url):
        raise UserError(
            f"--resume: the sweep's Optuna study is in '{recorded_storage}', not "
            f"'{redact_uri(url)}'; pass {STORAGE_FLAG} with the storage it started with"
        )
    return SweepStudy(storage_url=url, name=study_name(sweep, sweep_id), storage=open_storage(url))


def create_study(
    study: SweepStudy,
    *,
    directions: Sequence[str],
    attributes: dict[str, str],
) -> optuna.Study:
    """The sweep's study, created (or loaded on --resume) with its user attributes; Ray's
    OptunaSearch loads the same study by name. `directions`: each objective's mode ("max" or
    "min"), one for a single-objective sweep."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    created = optuna.create_study(
        storage=study.storage,
        study_name=study.name,
        directions=["maximize" if mode == "max" else "minimize" for mode in directions],
        load_if_exists=True,
    )
    for key, value in attributes.items():
        created.set_user_attr(key, value)
    return created


def searcher_arguments(study: SweepStudy | None) -> dict[str, Any]:
    """OptunaSearch's storage and study_name for the sweep's study ({} without one)."""
    if study is None:
        return {}
    return {"storage": study.storage, "study_name": study.name}
