"""A local MLflow tracking server (`mlflow server` on 127.0.0.1, proxied artifacts; a SQLite
store by default, or any backend store URI such as PostgreSQL's) as a context manager: for tests,
benchmarks and one machine where several processes or Ray nodes log to one store. The command is
`server_command`, the one docs/cluster.md's multi-node recipe shows (tests/test_docs_commands.py
checks that the page shows exactly this command).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from mlflow_tracking.uri import sqlite_uri


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def server_command(
    *,
    backend_store_uri: str,
    artifacts_destination: str,
    host: str,
    port: int,
    allowed_hosts: str,
    workers: int,
) -> list[str]:
    """`mlflow server` with a backend store, proxied artifacts, the address it listens on, the
    Host headers it answers and its worker processes (docs/cluster.md shows this command)."""
    return [
        "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--host", host, "--port", str(port), "--allowed-hosts", allowed_hosts,
        "--workers", str(workers),
    ]  # fmt: skip


class LocalTrackingServer:
    """`mlflow server --host 127.0.0.1` on a free port, stopped on exit (its process group only);
    `restart()` starts it again on the same port and store.

    Args:
        root: folder for the server log, and for mlflow.db and artifacts unless given.
        port: TCP port (default: a free one).
        backend_store_uri: the store (default: SQLite root/mlflow.db), e.g. a PostgreSQL URL.
        artifacts_destination: where proxied artifacts go (default: root/artifacts).
        start_timeout_s: how long to wait for /health.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        port: int | None = None,
        backend_store_uri: str | None = None,
        artifacts_destination: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 180.0,
    ):
        self.root = Path(root)
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "mlflow_server.log"
        self._backend_store_uri = backend_store_uri
        self.artifacts_destination = Path(artifacts_destination or self.root / "artifacts")

    @property
    def uri(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend_uri(self) -> str:
        """The server's store (SQLite root/mlflow.db unless another was given)."""
        return self._backend_store_uri or sqlite_uri(self.root / "mlflow.db")

    def start(self) -> LocalTrackingServer:
        """Starts the server and waits until /health answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        command = server_command(
            backend_store_uri=self.backend_uri,
            artifacts_destination=str(self.artifacts_destination.resolve()),
            host="127.0.0.1",
            port=self.port,
            # Any port: tests reach it through relays (tests/tcp_relay.py) on other ports.
            allowed_hosts="127.0.0.1:*,localhost:*",
            workers=1,
        )
        command[:1] = [sys.executable, "-m", "mlflow"]  # this environment's MLflow
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {self.start_timeout_s} s")

    def stop(self) -> None:
        """Stops the server's process group (SIGTERM, then SIGKILL after 15 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # start_new_session: the server leads its own group
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=15)

    def restart(self) -> LocalTrackingServer:
        """Stops the server and starts it again on the same port and store."""
        self.stop()
        return self.start()

    def __enter__(self) -> LocalTrackingServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
