"""`RunTracker`, the writer of one MLflow run: it buffers through tracking-server outages and
never duplicates a run or a metric step. Follows the MLflow client API (MlflowClient.create_run /
log_batch / set_terminated); it never imports Ray. Limits of the buffer are documented on
`RunTracker`.
"""

from __future__ import annotations

import collections
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.errors import first_line
from mlflow_tracking.store import TrackingTarget, is_transient
from mlflow_tracking.tags import PARENT_RUN_TAG
from mlflow_tracking.uri import redact_text
from mlflow_tracking.values import finite_metrics, param_value

# MLflow batch limits (log_batch accepts at most these per request).
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100


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
        self.terminated = False  # the run's end (FINISHED, FAILED or KILLED) reached the store
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
            params = [Param(k, v) for k, v in payload.items()]
            for start in range(0, len(params), _MAX_PARAMS_PER_BATCH):
                client.log_batch(self.run_id, params=params[start : start + _MAX_PARAMS_PER_BATCH])
        elif kind == "tags":
            tags = [RunTag(k, v) for k, v in payload.items()]
            for start in range(0, len(tags), _MAX_PARAMS_PER_BATCH):
                client.log_batch(self.run_id, tags=tags[start : start + _MAX_PARAMS_PER_BATCH])
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
            self.terminated = True
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
