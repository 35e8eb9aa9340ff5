"""The MLflow store: a client for a tracking URI (credentials through the environment), a
SQLite store created under a lock and repaired when a killed process left it half-initialised,
experiments opened or created as training experiments, and which store errors are transient.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungsrad.errors import UserError, first_line
from mlflow_tracking.tags import EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND
from mlflow_tracking.uri import (
    HTTP_SCHEMES,
    check_server,
    normalize_tracking_uri,
    redact_text,
    redact_uri,
    split_credentials,
    sqlite_path,
)

# MLflow error codes that retrying cannot fix (the operation is dropped with a warning).
_PERMANENT_ERROR_CODES = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_STATE",
    "BAD_REQUEST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "FEATURE_DISABLED",
}


def configure_http_retries(*, max_retries: int = 1, timeout_s: int = 15) -> None:
    """Bounds how long one MLflow HTTP request may block (MLflow's default retries for
    minutes). Process-wide (MLflow reads these variables per request); values the user set in
    the environment are kept. RunTracker retries failed operations itself."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs go: a tracking URI and an experiment. Picklable (sent to Ray trials).

    The URI may hold credentials (http://user:pass@host); they are sent as MLflow's basic-auth
    variables, never inside the URI, and `repr`/`display_uri` hide them.
    """

    uri: str = field(repr=False)
    experiment_name: str
    experiment_id: str

    @property
    def display_uri(self) -> str:
        """The URI without credentials."""
        return redact_uri(self.uri)

    def __repr__(self) -> str:
        return (
            f"TrackingTarget(uri={self.display_uri!r}, experiment_name={self.experiment_name!r}, "
            f"experiment_id={self.experiment_id!r})"
        )

    def client(self) -> Any:
        """An MlflowClient for this URI (credentials passed through the environment)."""
        return make_client(self.uri)


def make_client(uri: str) -> Any:
    """MlflowClient for `uri`; http credentials move to MLFLOW_TRACKING_USERNAME/PASSWORD.

    A SQLite store is created (or its schema migrated) under a lock file beside the database,
    so that several processes opening a new store at once do not race MLflow's migrations.
    """
    from mlflow.tracking import MlflowClient

    # "Creating initial MLflow database tables..." on the first use of a SQLite store is noise
    # on stderr (where a failed command's one-line error goes).
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    clean, user, password = split_credentials(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password or ""
    database = sqlite_path(clean)
    if database is None:
        return MlflowClient(tracking_uri=clean)
    from lungsrad.files import file_lock

    with file_lock(database.with_name(database.name + ".lock")):
        _repair_half_initialised(database)
        client = MlflowClient(tracking_uri=clean)
        try:
            client.search_experiments(max_results=1)  # creates or migrates the tables now
        except Exception as error:  # SQLAlchemy/alembic errors differ per cause
            raise UserError(
                f"MLflow store {database} cannot be opened ({first_line(error)[:200]}); "
                f"upgrade it with `mlflow db upgrade sqlite:///{database}` or move it aside"
            ) from None
    return client


def open_existing_store(uri: str) -> Any:
    """MlflowClient for a store that commands only read (report, compare): a SQLite store must
    exist already, never created empty by a reader. UserError naming where it looked."""
    uri = normalize_tracking_uri(uri)
    database = sqlite_path(split_credentials(uri)[0])
    if database is not None and not database.is_file():
        raise UserError(
            f"no MLflow store at {database} (tracking URI '{redact_uri(uri)}'); pass the "
            "--tracking-uri the sweep or final.py used (it prints it, and its sweep.json "
            "records it)"
        )
    check_server(uri)
    return make_client(uri)


def _repair_half_initialised(database: Path) -> None:
    """A store left half-initialised by a process killed inside MLflow's table creation or a
    schema migration (a leftover `_alembic_tmp_*` table, or tables without a schema version)
    is rebuilt when it holds no run; otherwise UserError names it. Call under the store lock."""
    import sqlite3

    if not database.is_file() or database.stat().st_size == 0:
        return
    with contextlib.closing(sqlite3.connect(database)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        leftovers = sorted(name for name in tables if name.startswith("_alembic_tmp_"))
        versioned = "alembic_version" in tables and bool(
            connection.execute("SELECT COUNT(*) FROM alembic_version").fetchone()[0]
        )
        if not tables or (versioned and not leftovers):
            return
        runs = (
            connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
        )
    problem = (
        f"leftover table {leftovers[0]} of an interrupted schema migration"
        if leftovers
        else "tables without a schema version (table creation was interrupted)"
    )
    if runs:
        raise UserError(
            f"MLflow store {database} is half-initialised ({problem}) and holds {runs} runs; "
            "restore it from a backup or move it aside to start a new store"
        )
    warnings.warn(f"rebuilding the empty MLflow store {database}: {problem}", stacklevel=3)
    for suffix in ("", "-journal", "-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)


def open_experiment(
    uri: str,
    experiment_name: str,
    *,
    artifact_root: str | os.PathLike[str] | None = None,
    timeout_s: float = 5.0,
) -> TrackingTarget:
    """Checks the tracking URI and gets or creates the experiment.

    Args:
        uri: tracking URI (normalised by `normalize_tracking_uri`).
        experiment_name: MLflow experiment.
        artifact_root: folder for a new experiment's artifacts when the store is a database or
            file store (ignored for tracking servers, which store artifacts themselves).
        timeout_s: how long the server health check may take.

    Raises:
        UserError: one line naming the URI (credentials hidden) and what to do.
    """
    uri = normalize_tracking_uri(uri)
    check_server(uri, timeout_s=timeout_s)
    scheme = urllib.parse.urlsplit(uri).scheme.split("+", 1)[0]
    if scheme == "sqlite":
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    client = make_client(uri)
    try:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            location = None
            if artifact_root is not None and scheme not in HTTP_SCHEMES:
                location = Path(artifact_root).expanduser().resolve().as_uri()
            experiment_id = _create_experiment(client, experiment_name, location)
        elif experiment.lifecycle_stage != "active":
            raise UserError(
                f"MLflow experiment '{experiment_name}' at '{redact_uri(uri)}' is deleted; "
                "restore it (mlflow experiments restore) or choose another --experiment"
            )
        else:
            experiment_id = experiment.experiment_id
            mark_training_experiment(client, experiment)
    except ValueError:
        raise
    except Exception as error:  # MLflow/SQLAlchemy/requests errors differ per store
        message = redact_text(first_line(error, empty=repr(error)), uri)
        raise UserError(
            f"MLflow tracking URI '{redact_uri(uri)}' is not usable: {message}"
        ) from None
    return TrackingTarget(uri=uri, experiment_name=experiment_name, experiment_id=experiment_id)


def mark_training_experiment(client: Any, experiment: Any) -> None:
    """Tags an existing experiment as a training experiment when it has no kind yet (one made
    before this tag was set, or by hand), so the MLflow UI opens it on its runs table."""
    if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):
        client.set_experiment_tag(
            experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND
        )


def _create_experiment(client: Any, name: str, location: str | None) -> str:
    """Creates the experiment; another process creating it at the same moment is no error."""
    try:
        return client.create_experiment(
            name,
            artifact_location=location,
            tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND},
        )
    except Exception:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def is_transient(error: BaseException) -> bool:
    """True when retrying later may succeed (server down, timeout, locked database)."""
    code = getattr(error, "error_code", None)
    if code is not None:
        return code not in _PERMANENT_ERROR_CODES
    return not isinstance(error, (TypeError, AttributeError, KeyError))
