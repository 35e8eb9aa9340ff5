"""A local MLflow tracking server (`mlflow server` on 127.0.0.1, SQLite backend, proxied
artifacts) as a context manager: for tests and for one machine where several processes or Ray
nodes log to one store. A multi-node cluster runs `mlflow server` on a SQL database instead
(README, multi-node recipe).
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


class LocalTrackingServer:
    """`mlflow server --host 127.0.0.1` on a free port, stopped on exit (its process group only).

    Args:
        root: folder for mlflow.db, artifacts and the server log.
        port: TCP port (default: a free one).
        start_timeout_s: how long to wait for /health.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        port: int | None = None,
        start_timeout_s: float = 180.0,
    ):
        self.root = Path(root)
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "mlflow_server.log"

    @property
    def uri(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def backend_uri(self) -> str:
        """The server's SQLite store."""
        return sqlite_uri(self.root / "mlflow.db")

    def start(self) -> LocalTrackingServer:
        """Starts the server and waits until /health answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
            "--backend-store-uri", self.backend_uri,
            "--artifacts-destination", str((self.root / "artifacts").resolve()),
        ]  # fmt: skip
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

    def __enter__(self) -> LocalTrackingServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
