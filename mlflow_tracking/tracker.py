"""MLflow runs for lungsrad sweeps: tracking-URI checks, credential-free display, tag names, and
`RunTracker`, a run writer that buffers through tracking-server outages and never duplicates.

Follows the MLflow client API (MlflowClient.create_run / log_batch / set_terminated); it never
imports Ray. Limits of the buffer are documented on `RunTracker`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungsrad.errors import UserError, first_line

# Tag names every lungsrad run may carry (MLflow tags are strings).
TAG_ROLE = "lungsrad.role"  # sweep | trial | final | final_seed
TAG_SWEEP = "lungsrad.sweep"  # search-space name
TAG_SWEEP_DIR = "lungsrad.sweep_dir"  # Ray Tune experiment folder (storage path)
TAG_SWEEP_ID = "lungsrad.sweep_id"  # random id of one sweep (its folder name ends with it)
TAG_SEARCH_SPACE = "lungsrad.search_space"  # the YAML file
TAG_TRIAL_ID = "lungsrad.trial_id"  # Ray Tune trial id (stable across retries and --resume)
TAG_TRIAL_NAME = "lungsrad.trial_name"
TAG_VARIANT = "lungsrad.variant"  # base config name of the trial
TAG_VALUES = "lungsrad.values"  # JSON {swept parameter: value label}
TAG_BASE_VALUES = "lungsrad.base_values"  # parent run: JSON {parameter: label at the base config}
TAG_SEED = "lungsrad.seed"
TAG_PROTOCOL = "lungsrad.protocol"
TAG_METRIC = "lungsrad.metric"  # the metric the sweep optimises
TAG_GIT_COMMIT = "lungsrad.git_commit"
TAG_DATA_FINGERPRINT = "lungsrad.data_fingerprint"
TAG_SCAN_BACKEND = "lungsrad.scan_backend"
TAG_DEVICE = "lungsrad.device"
TAG_DEVICE_NAME = "lungsrad.device_name"
TAG_DEVICE_REASON = "lungsrad.device_reason"
TAG_AMP = "lungsrad.amp"
TAG_NODE_ID = "lungsrad.ray_node_id"
TAG_NODE_IP = "lungsrad.ray_node_ip"
TAG_WORKER_PID = "lungsrad.worker_pid"  # the Ray worker process (reused across trials)
TAG_GPU_IDS = "lungsrad.ray_gpu_ids"
TAG_CUDA_VISIBLE_DEVICES = "lungsrad.cuda_visible_devices"
TAG_FAILURE = "lungsrad.failure"  # why the run failed (one line)
TAG_PREVIOUS_FAILURE = "lungsrad.previous_failure"  # failure of an earlier attempt (retried)
TAG_STARTS = "lungsrad.attempts"  # how many times the trial process (re)started this run
TAG_RESUMED_FROM_EPOCH = "lungsrad.resumed_from_epoch"  # last start's checkpoint epoch (0: fresh)
TAG_STOPPED_EARLY = "lungsrad.stopped_early"  # "true": the scheduler stopped the trial
TAG_BEST_EPOCH = "lungsrad.best_epoch"  # the epoch the protocol selected
# "no", or lungsrad.metrics.degenerate_note of the reported epoch ("degenerate: predicts only
# 'normal'"); on a parent run, which seeds of the chosen configuration are degenerate.
TAG_DEGENERATE = "lungsrad.degenerate"
NOT_DEGENERATE = "no"
# A trial run's state as a person reads it: running | retrying | done | stopped early | failed
TAG_TRIAL_STATUS = "lungsrad.trial_status"
PARENT_RUN_TAG = "mlflow.parentRunId"
# The MLflow UI (3.x) opens an experiment by its kind: a training experiment opens on the runs
# table, one without the tag on the GenAI overview (traces, "Detect issues").
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"
RUN_DESCRIPTION_TAG = "mlflow.note.content"  # the run's "Description" in the MLflow UI
# Metric of a finished run: RunResult.train_seconds (training + evaluation epochs).
METRIC_TRAIN_SECONDS = "run.train_seconds"

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
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_HTTP_SCHEMES = ("http", "https")
SUPPORTED_SCHEMES = (*_SQL_SCHEMES, *_HTTP_SCHEMES, "file")
# MLflow batch limits (log_batch accepts at most these per request).
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_VALUE_LENGTH = 6000


# ---------------------------------------------------------------------------------------------
# Tracking URIs


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(uri without user:password@, user, password) for http(s) URIs; others are unchanged."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme not in _HTTP_SCHEMES or "@" not in parsed.netloc:
        return uri, None, None
    userinfo, host = parsed.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit(parsed._replace(netloc=host))
    return clean, urllib.parse.unquote(user) or None, urllib.parse.unquote(password) or None


def redact_uri(uri: str) -> str:
    """The URI with any user:password@ replaced by ***@ (safe to print, tag or log)."""
    parsed = urllib.parse.urlsplit(uri)
    if "@" not in parsed.netloc:
        return uri
    host = parsed.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parsed._replace(netloc=f"***@{host}"))


def redact_text(text: str, uri: str) -> str:
    """`text` with the URI's credentials (and the URI itself) removed."""
    text = text.replace(uri, redact_uri(uri))
    parsed = urllib.parse.urlsplit(uri)
    if "@" in parsed.netloc:
        userinfo = parsed.netloc.rsplit("@", 1)[0]
        password = userinfo.partition(":")[2]
        secrets = {userinfo, password, urllib.parse.unquote(password)} - {""}
        # Longest first: "user:password" before "password", or "user:***" would be left.
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
    return re.sub(r"//[^/@\s]+:[^/@\s]+@", "//***@", text)


def sqlite_uri(path: str | os.PathLike[str]) -> str:
    """sqlite:////absolute/path.db for a database file."""
    return "sqlite:///" + str(Path(path).expanduser().resolve())


def normalize_tracking_uri(uri: str) -> str:
    """Makes sqlite and file URIs absolute (Ray workers run in other folders) and checks the
    scheme; ValueError naming the URI (credentials hidden) when it cannot be used."""
    shown = redact_uri(uri)
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.split("+", 1)[0].lower()
    if scheme not in SUPPORTED_SCHEMES:
        close = [s for s in SUPPORTED_SCHEMES if s[0] == scheme[:1]] if scheme else []
        hint = f" (did you mean {close[0]}://?)" if close else ""
        raise UserError(
            f"tracking URI '{shown}' has unsupported scheme '{parsed.scheme}'{hint}; use "
            "sqlite:////ABS/PATH/mlflow.db, http://HOST:PORT or postgresql://USER@HOST/DB"
        )
    if scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise UserError(
                f"tracking URI '{shown}' needs a database file: sqlite:////ABS/PATH/mlflow.db"
            )
        return sqlite_uri(path)
    if scheme == "file":
        return Path(urllib.parse.unquote(parsed.path)).expanduser().resolve().as_uri()
    if scheme in _HTTP_SCHEMES and not parsed.hostname:
        raise UserError(f"tracking URI '{shown}' has no host; use http://HOST:PORT")
    return uri


def check_server(uri: str, *, timeout_s: float = 5.0) -> None:
    """For http(s) URIs: GET /health must answer 200. ValueError naming the URI otherwise."""
    clean, _, _ = split_credentials(uri)
    if urllib.parse.urlsplit(clean).scheme not in _HTTP_SCHEMES:
        return
    url = clean.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http only)
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(
            f"MLflow tracking server '{redact_uri(uri)}' is not reachable ({reason}); start it "
            "(mlflow server --host 127.0.0.1 --port PORT --backend-store-uri ...) or fix "
            "--tracking-uri"
        ) from None
    if status != 200:
        raise UserError(
            f"'{redact_uri(uri)}' answered HTTP {status} on /health: it is not an MLflow "
            "tracking server; fix --tracking-uri"
        )


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


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, None for other URIs."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def _repair_half_initialised(database: Path) -> None:
    """A store left half-initialised by a process killed inside MLflow's table creation or a
    schema migration (a leftover `_alembic_tmp_*` table, or tables without a schema version)
    is rebuilt when it holds no run; otherwise ValueError names it. Call under the store lock."""
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
        ValueError: one line naming the URI (credentials hidden) and what to do.
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
            if artifact_root is not None and scheme not in _HTTP_SCHEMES:
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


# ---------------------------------------------------------------------------------------------
# Values


# Significant digits of a swept value wherever a person reads it (run names, console, summary,
# report, plots); the exact value stays in the run's params and the lungsrad.values tag.
DISPLAY_DIGITS = 3


def display_value(label: str) -> str:
    """A value label as people read it: numbers to DISPLAY_DIGITS significant digits
    ("0.03666490418612682" -> "0.0367"), whole numbers and words unchanged."""
    try:
        number = float(label)
    except (TypeError, ValueError):
        return str(label)
    if not math.isfinite(number) or (number.is_integer() and "." not in str(label)):
        return str(label)
    return f"{number:.{DISPLAY_DIGITS}g}"


def param_value(value: Any) -> str:
    """A config value as an MLflow param string (lists as YAML-like text, None as 'null')."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)
    return text[:_MAX_PARAM_VALUE_LENGTH]


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric metrics only; NaN stays (MLflow stores it), inf is dropped (SQL stores reject it)."""
    kept: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isinf(value):
            continue
        kept[key] = float(value)
    return kept


def is_transient(error: BaseException) -> bool:
    """True when retrying later may succeed (server down, timeout, locked database)."""
    code = getattr(error, "error_code", None)
    if code is not None:
        return code not in _PERMANENT_ERROR_CODES
    return not isinstance(error, (TypeError, AttributeError, KeyError))


# ---------------------------------------------------------------------------------------------
# The buffered run writer


@dataclass
class _Operation:
    kind: str  # params | tags | delete_tags | metrics | artifact_dir | text | terminate
    payload: Any


class RunTracker:
    """Writes one MLflow run through an in-memory buffer.

    Every call only queues; `flush()` sends the queue in order and stops at the first failure
    that retrying may fix (server down, timeout, locked SQLite), so an outage costs nothing but
    memory and the metrics arrive with the next successful flush. Operations MLflow rejects for
    good (e.g. a changed param value) are dropped with a warning.

    No duplicates: a run with `identity` tags is looked up under its parent before one is
    created (a retried or resumed trial continues its run), and metric steps already stored for
    `dedupe_key` are not sent again.

    Limits: the buffer holds at most `max_buffered_values` metric values (oldest dropped, with a
    warning); `finish()` waits at most `timeout_s` for the store, then warns with what is still
    queued; artifacts are referenced by path, so their files
    must outlive the tracker.

    Args:
        target: tracking URI + experiment.
        run_name: name of a new run.
        run_id: an existing run to write to (e.g. a resumed sweep's parent run).
        parent_run_id: makes a new run a child of this run.
        identity: tags that identify the run (searched before creating one).
        tags: tags set when the run is created.
        dedupe_key: metric that marks a per-step update (e.g. the epoch): an update holding it
            at a step the run already has is skipped (a continued run never logs a step twice).
        max_buffered_values: metric values kept while the store is unreachable.
        retry_interval_s: after a failed flush, further flushes wait this long (doubling, at
            most 60 s) unless forced.
    """

    def __init__(
        self,
        target: TrackingTarget,
        *,
        run_name: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        identity: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        dedupe_key: str | None = None,
        max_buffered_values: int = 200_000,
        retry_interval_s: float = 2.0,
    ):
        self.target = target
        self.run_name = run_name
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.identity = dict(identity or {})
        self.initial_tags = {k: str(v) for k, v in (tags or {}).items()}
        self.dedupe_key = dedupe_key
        self.max_buffered_values = max_buffered_values
        self.retry_interval_s = retry_interval_s
        self.reused_existing = False
        self.existing_tags: dict[str, str] = {}  # tags of the run found by `identity`
        self.last_error: str | None = None
        self._queue: collections.deque[_Operation] = collections.deque()
        self._client: Any = None
        self._stored_steps: set[int] = set()
        self._next_attempt = 0.0
        self._backoff = retry_interval_s
        self._buffered_values = 0

    # -- queueing --------------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Queues params (values converted with `param_value`)."""
        self._queue.append(_Operation("params", {k: param_value(v) for k, v in params.items()}))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Queues tags."""
        self._queue.append(_Operation("tags", {k: str(v) for k, v in tags.items()}))

    def delete_tags(self, keys: Iterable[str]) -> None:
        """Queues the removal of tags (missing ones are ignored)."""
        self._queue.append(_Operation("delete_tags", list(keys)))

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int) -> None:
        """Queues numeric metrics at `step` (non-numbers and infinities are skipped)."""
        values = finite_metrics(metrics)
        if not values:
            return
        stamp = int(time.time() * 1000)
        self._queue.append(_Operation("metrics", (step, stamp, values)))
        self._buffered_values += len(values)
        while self._buffered_values > self.max_buffered_values:
            self._drop_oldest_metrics()

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Queues the upload of a folder's files (the folder must stay until flushed)."""
        self._queue.append(_Operation("artifact_dir", (str(local_dir), artifact_path)))

    def log_text(self, text: str, artifact_file: str) -> None:
        """Queues a text artifact (kept in memory until sent)."""
        self._queue.append(_Operation("text", (text, artifact_file)))

    def terminate(self, status: str = "FINISHED") -> None:
        """Queues the end of the run (FINISHED, FAILED or KILLED)."""
        self._queue.append(_Operation("terminate", status))

    @property
    def pending(self) -> int:
        """Operations not yet sent."""
        return len(self._queue)

    # -- sending ---------------------------------------------------------------------------

    def flush(self, *, force: bool = False) -> bool:
        """Sends what is queued. Returns True when the queue is empty afterwards.

        Without `force`, a flush right after a failed one is skipped (see retry_interval_s), so
        calling this every epoch costs nothing while the store is down.
        """
        if not force and time.monotonic() < self._next_attempt:
            return not self._queue
        try:
            self._ensure_run()
            while self._queue:
                if self._queue[0].kind == "metrics":
                    self._send_metrics()
                    continue
                operation = self._queue[0]
                try:
                    self._send(operation)
                except Exception as error:
                    if is_transient(error):
                        raise
                    self._warn(f"MLflow rejected a {operation.kind} update; it is dropped", error)
                self._queue.popleft()
        except Exception as error:
            if not is_transient(error):
                raise
            self.last_error = self._describe(error)
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 60.0)
            return False
        self._backoff = self.retry_interval_s
        self._next_attempt = 0.0
        self.last_error = None
        return True

    def deliver(self, *, timeout_s: float) -> bool:
        """Flushes until the queue is empty or `timeout_s` has passed; True when all was sent."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.flush(force=True):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self._backoff, max(0.0, deadline - time.monotonic()), 10.0))

    def finish(self, status: str = "FINISHED", *, timeout_s: float = 120.0) -> bool:
        """Ends the run and waits (at most `timeout_s`) until everything is sent.

        Returns True when all was delivered; otherwise warns with what was not.
        """
        self.terminate(status)
        if self.deliver(timeout_s=timeout_s):
            return True
        warnings.warn(
            f"MLflow at '{self.target.display_uri}' stayed unreachable for {timeout_s:.0f} s "
            f"({self.last_error}): {len(self._queue)} updates of run "
            f"{self.run_id or self.run_name} were not delivered",
            stacklevel=2,
        )
        return False

    # -- internals -------------------------------------------------------------------------

    def _client_or_new(self) -> Any:
        if self._client is None:
            self._client = self.target.client()
        return self._client

    def _ensure_run(self) -> None:
        if self.run_id is not None:
            return
        client = self._client_or_new()
        if self.identity:
            existing = self._find_existing(client)
            if existing is not None:
                self.run_id = existing.info.run_id
                self.reused_existing = True
                self.existing_tags = dict(existing.data.tags)
                if existing.info.status != "RUNNING":
                    client.update_run(self.run_id, status="RUNNING")
                if self.dedupe_key is not None:
                    history = client.get_metric_history(self.run_id, self.dedupe_key)
                    self._stored_steps = {int(metric.step) for metric in history}
                return
        tags = {**self.initial_tags, **self.identity}
        if self.parent_run_id is not None:
            tags[PARENT_RUN_TAG] = self.parent_run_id
        run = client.create_run(self.target.experiment_id, tags=tags, run_name=self.run_name)
        self.run_id = run.info.run_id

    def _find_existing(self, client: Any) -> Any:
        clauses = [f"tags.`{key}` = '{_quote(value)}'" for key, value in self.identity.items()]
        if self.parent_run_id is not None:
            clauses.append(f"tags.`{PARENT_RUN_TAG}` = '{_quote(self.parent_run_id)}'")
        runs = client.search_runs(
            [self.target.experiment_id],
            filter_string=" and ".join(clauses),
            order_by=["attributes.start_time ASC"],
            max_results=5,
        )
        return runs[0] if runs else None

    def _send_metrics(self) -> None:
        """Sends the consecutive metric updates at the head of the queue in one request."""
        from mlflow.entities import Metric

        taken: list[_Operation] = []
        count = 0
        for operation in self._queue:
            if operation.kind != "metrics":
                break
            size = len(operation.payload[2])
            if taken and count + size > _MAX_METRICS_PER_BATCH:
                break
            taken.append(operation)
            count += size
        batch = [
            Metric(key, value, stamp, step)
            for step, stamp, values in (operation.payload for operation in taken)
            if not self._is_stored(step, values)
            for key, value in values.items()
        ]
        client = self._client_or_new()
        try:
            for start in range(0, len(batch), _MAX_METRICS_PER_BATCH):
                chunk = batch[start : start + _MAX_METRICS_PER_BATCH]
                client.log_batch(self.run_id, metrics=chunk)
        except Exception as error:
            if is_transient(error):
                raise
            self._warn("MLflow rejected a metrics update; it is dropped", error)
        for operation in taken:
            self._queue.popleft()
            self._buffered_values -= len(operation.payload[2])
            if self.dedupe_key in operation.payload[2]:
                self._stored_steps.add(operation.payload[0])

    def _is_stored(self, step: int, values: Mapping[str, float]) -> bool:
        """True for an update of `dedupe_key`'s step that the run already holds."""
        return self.dedupe_key in values and step in self._stored_steps

    def _send(self, operation: _Operation) -> None:
        from mlflow.entities import Param, RunTag

        client = self._client_or_new()
        kind, payload = operation.kind, operation.payload
        if kind == "params":
            items = [Param(k, v) for k, v in payload.items()]
            for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
                client.log_batch(self.run_id, params=items[start : start + _MAX_PARAMS_PER_BATCH])
        elif kind == "tags":
            items = [RunTag(k, v) for k, v in payload.items()]
            for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
                client.log_batch(self.run_id, tags=items[start : start + _MAX_PARAMS_PER_BATCH])
        elif kind == "artifact_dir":
            local_dir, artifact_path = payload
            if Path(local_dir).is_dir():
                client.log_artifacts(self.run_id, local_dir, artifact_path)
        elif kind == "text":
            text, artifact_file = payload
            client.log_text(self.run_id, text, artifact_file)
        elif kind == "delete_tags":
            run_tags = client.get_run(self.run_id).data.tags
            for key in payload:
                if key in run_tags:
                    client.delete_tag(self.run_id, key)
        elif kind == "terminate":
            client.set_terminated(self.run_id, status=payload)
        else:
            raise AssertionError(f"unknown operation {kind}")

    def _drop_oldest_metrics(self) -> None:
        for index, operation in enumerate(self._queue):
            if operation.kind == "metrics":
                del self._queue[index]
                self._buffered_values -= len(operation.payload[2])
                warnings.warn(
                    f"MLflow buffer full ({self.max_buffered_values} values): dropped the metrics "
                    f"of step {operation.payload[0]}",
                    stacklevel=3,
                )
                return
        self._buffered_values = 0

    def _describe(self, error: BaseException) -> str:
        return redact_text(first_line(error), self.target.uri)[:300]

    def _warn(self, message: str, error: BaseException) -> None:
        warnings.warn(f"{message}: {self._describe(error)}", stacklevel=3)


def _quote(value: str) -> str:
    return str(value).replace("'", "\\'")
