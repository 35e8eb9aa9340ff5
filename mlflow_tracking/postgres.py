"""A PostgreSQL cluster of its own (initdb + pg_ctl of Debian's `postgresql` package) in a
temporary folder on a free 127.0.0.1 port: the SQL store of docs/cluster.md's `mlflow server`
recipe, for the tests and benchmarks/sweep_soak.py. It never touches a system service.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from mlflow_tracking.server import free_port

# Where Debian's `postgresql` package puts its programs (one folder per major version).
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
# Unprivileged users a root process runs PostgreSQL as (postgres refuses to run as root).
_UNPRIVILEGED_USERS = ("postgres", "nobody")


def find_postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin with initdb and pg_ctl; None when not installed."""
    found = [
        Path(folder)
        for folder in glob.glob(POSTGRES_BIN_GLOB)
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file()
    ]
    found.sort(key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(
        f"running as root and none of the users {_UNPRIVILEGED_USERS} exists to run PostgreSQL"
    )


class LocalPostgres:
    """`initdb` + `pg_ctl start` in a new temporary folder (data, unix socket, log), listening
    on 127.0.0.1 only, trust authentication for `user`; `close()` stops it and removes the
    folder. As root, the server runs as the `postgres` (else `nobody`) account, which owns the
    folder. Restartable on the same port and data (`stop()` then `start()`).

    Args:
        port: TCP port (default: a free one).
        user: the database superuser the URLs name.
        bin_dir: PostgreSQL's programs (default: `find_postgres_bin()`).
        start_timeout_s: how long `pg_ctl start` may wait for the server to accept connections.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        user: str = "lungsrad",
        bin_dir: str | os.PathLike[str] | None = None,
        start_timeout_s: int = 120,
    ):
        found = Path(bin_dir) if bin_dir is not None else find_postgres_bin()
        if found is None:
            raise FileNotFoundError(
                f"PostgreSQL is not installed (no initdb in {POSTGRES_BIN_GLOB}); "
                "install Debian's `postgresql` package"
            )
        self.bin_dir = found
        self.port = port or free_port()
        self.user = user
        self.start_timeout_s = start_timeout_s
        self.account = _server_account()
        # Short path under /tmp: the unix socket's path is limited to 107 bytes, and a root
        # test's tmp_path (mode 0700) is closed to the server's account.
        self.folder = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
        if self.account is not None:
            os.chown(self.folder, self.account.pw_uid, self.account.pw_gid)
        self.data = self.folder / "data"
        self.log_path = self.folder / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """postgresql://USER@127.0.0.1:PORT/DATABASE (the form MLflow and Optuna take)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.bin_dir / program), *arguments]
        account = self.account
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=self.folder,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
            timeout=self.start_timeout_s + 60,
        )
        if completed.returncode != 0:
            log = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            raise RuntimeError(
                f"{program} failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}"
                f"\n{log}"
            )

    def _initialise(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "-A", "trust",
            "-E", "UTF8", "--locale", "C", "--no-sync",
        )  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.folder}'",
            "max_connections": "200",
        }
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("".join(f"{key} = {value}\n" for key, value in settings.items()))

    def start(self) -> LocalPostgres:
        """Initialises the cluster (first start) and starts it; returns once it accepts
        connections."""
        if not (self.data / "PG_VERSION").is_file():
            self._initialise()
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log_path),
            "-w", "-t", str(self.start_timeout_s),
        )  # fmt: skip
        return self

    def stop(self) -> None:
        """Stops the server (fast shutdown: open connections are closed); the data stays."""
        if (self.data / "postmaster.pid").is_file():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    @property
    def is_running(self) -> bool:
        """True while the server's pid file exists."""
        return (self.data / "postmaster.pid").is_file()

    def close(self) -> None:
        """Stops the server and removes its folder."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def connect(self, database: str = "postgres") -> Any:
        """A psycopg connection (autocommit) to `database`: psycopg 3, the driver SQLAlchemy 2.1
        (MLflow's and Optuna's) uses for a postgresql:// URL."""
        import psycopg

        return psycopg.connect(self.url(database), autocommit=True)

    def create_database(self, name: str) -> str:
        """Creates database `name` (e.g. one for MLflow, one for an Optuna study); its URL."""
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def database_bytes(self, name: str) -> int:
        """Size of database `name` on disk (pg_database_size)."""
        return int(self._query(name, "SELECT pg_database_size(current_database())")[0][0])

    def count_rows(self, name: str, tables: Iterable[str]) -> dict[str, int]:
        """Rows of each table of database `name` (a table that does not exist counts 0)."""
        counts = {}
        existing = {row[0] for row in self._query(name, "SELECT tablename FROM pg_tables")}
        for table in tables:
            counts[table] = (
                int(self._query(name, f'SELECT COUNT(*) FROM "{table}"')[0][0])
                if table in existing
                else 0
            )
        return counts

    def _query(self, database: str, sql: str) -> list[tuple[Any, ...]]:
        connection = self.connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
