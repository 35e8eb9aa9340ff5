"""Helpers of the sweep tests: the tiny run config, Ray clusters started with `ray start`
(head and worker nodes on 127.0.0.1, token auth on, stopped by process group), MLflow queries.

Every cluster a test starts is its own: unique temp dir, free ports, a per-test auth token, and
only the processes it started are stopped (never `ray stop`, which would stop other clusters).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lungsrad.metrics import EPOCH
from mlflow_tracking.server import free_port
from tests.processes import Held  # noqa: F401 (for the tests that import it from here)

REPO = Path(__file__).resolve().parents[2]

# A DASS small enough that an epoch of 2 steps takes about a second on one CPU.
TINY_BASE: dict[str, Any] = {
    "name": "tiny",
    "data": {"segment_seconds": 1.0, "num_mel_bins": 32},
    "model": {
        "preset": "custom",
        "dims": [8, 16],
        "depths": [1, 1],
        "drop_path_rate": 0.0,
        "scan_backend": "chunked",
    },
    "method": {
        "regularization": {"enabled": True, "stage": 1, "blocks": "all"},
        "patch_mix": {"mode": "dual", "projection_dim": 16},
    },
    "train": {
        "num_epochs": 2,
        "batch_size": 8,
        "eval_batch_size": 64,
        "learning_rate": 1.0e-3,
        "time_mask": 10,
        "freq_mask": 8,
        "max_steps_per_epoch": 2,
        "num_threads": 1,
    },
}


# Overrides of TINY_BASE that make an epoch last a few seconds on one CPU (with 30 synthetic
# recordings): long enough for a fault test to act inside an epoch.
SECONDS_PER_EPOCH_BASE: dict[str, Any] = {
    "data": {"segment_seconds": 2.0, "num_mel_bins": 64},
    "train": {"batch_size": 4, "max_steps_per_epoch": 24},
}


def one_long_trial_space(folder: Path, name: str, *, epochs: int = 12) -> Path:
    """A space of one trial whose `epochs` epochs last seconds each (SECONDS_PER_EPOCH_BASE),
    over 30 synthetic recordings written in `folder`/data: long enough for a fault test to stop
    and restart a store between epochs."""
    from lungsrad.data.synthetic import write_synthetic_dataset

    data = folder / "data"
    write_synthetic_dataset(data, num_recordings=30, seed=0)
    base = json.loads(json.dumps(SECONDS_PER_EPOCH_BASE))
    base["train"]["num_epochs"] = epochs
    return write_tiny_space(
        folder / f"{name}.yaml",
        data=data,
        base=base,
        parameters={"method.patch_mix.alpha": {"grid": [1.0]}},
        search="grid",
        resources={"cpu": 1},
    )


def write_tiny_space(
    path: Path,
    *,
    data: Path,
    parameters: dict[str, Any],
    base: dict[str, Any] | None = None,
    **keys: Any,
) -> Path:
    """Writes a search space named after the file: TINY_BASE with `base` merged in (one level
    of sections), data.root = data, the feature cache beside the file, and the top-level keys."""
    merged = json.loads(json.dumps(TINY_BASE))
    merged["name"] = path.stem
    merged["data"].update({"root": str(data), "cache_dir": str(path.parent / "cache")})
    for section, values in (base or {}).items():
        merged.setdefault(section, {}).update(values)
    document = {"name": path.stem, "base_overrides": merged, "parameters": parameters, **keys}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class RayCluster:
    """Ray nodes started with `ray start --block` on 127.0.0.1, each in its own process group."""

    def __init__(self) -> None:
        # Short path: Ray's unix sockets live under the temp dir (108-byte limit).
        self.temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_ports(self) -> list[str]:
        return [
            "--node-ip-address", "127.0.0.1",
            "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
        ]  # fmt: skip

    def _start(
        self, arguments: list[str], log_name: str, env: dict[str, str] | None = None
    ) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        log = open(Path(self.temp_dir) / log_name, "ab")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [ray, "start", "--block", "--disable-usage-stats", *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **(env or {})},
            start_new_session=True,
        )
        self.processes.append(process)

    def start_head(
        self,
        *,
        num_cpus: int,
        resources: dict[str, float] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Starts the head node; `env` is added to its processes' environment (the job drivers
        and tasks it runs inherit it)."""
        self._start(
            [
                "--head",
                "--port", str(self.gcs_port),
                "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port),
                "--include-dashboard", "true",
                "--num-cpus", str(num_cpus),
                "--num-gpus", "0",
                "--temp-dir", self.temp_dir,
                "--resources", json.dumps(resources or {}),
                *self._node_ports(),
            ],
            "head.log",
            env,
        )  # fmt: skip
        _wait_for_port(self.gcs_port, 120)
        _wait_for_port(self.dashboard_port, 120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the job API answers once the head is complete
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=5):
                    return
            except urllib.error.HTTPError:
                return  # answered (401 without the auth token)
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"Ray dashboard did not answer; see {self.temp_dir}/head.log")

    def add_worker(
        self,
        *,
        num_cpus: int,
        resources: dict[str, float] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Starts a worker node; `env` is added to its processes' environment.

        The node has a temp dir of its own, as a node on another machine has: nodes sharing one
        would share runtime_resources/, and a worker node cleaning up a job's working_dir would
        delete the head's copy, the running job driver's current directory.
        """
        index = len(self.processes)
        temp_dir = Path(self.temp_dir) / f"w{index}"
        temp_dir.mkdir()
        self._start(
            [
                "--address", self.address,
                "--temp-dir", str(temp_dir),
                "--num-cpus", str(num_cpus),
                "--num-gpus", "0",
                "--resources", json.dumps(resources or {}),
                *self._node_ports(),
            ],
            f"worker{index}.log",
            env,
        )  # fmt: skip

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        code = textwrap.dedent(
            f"""
            import time, ray
            ray.init(address="{self.address}", logging_level="ERROR")
            deadline = time.monotonic() + {timeout_s}
            while sum(n["Alive"] for n in ray.nodes()) < {count}:
                if time.monotonic() > deadline:
                    raise SystemExit("cluster has too few nodes")
                time.sleep(1)
            """
        )
        subprocess.run(
            [sys.executable, "-c", code], env=self.env, check=True, timeout=timeout_s + 60
        )

    def stop(self) -> None:
        """SIGTERM to each node's process group (`ray start --block` stops its node); what is
        left after a few seconds (Ray drains a node for up to 30 s) is killed."""
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in reversed(self.processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the node's other processes too
            except ProcessLookupError:
                pass
            process.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def reported_epochs(trial_dir: Path) -> list[int]:
    """Epochs of a trial's results the sweep driver has received: the whole lines of the
    result.json Tune's driver writes in the trial's folder."""
    try:
        text = (trial_dir / "result.json").read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")[:-1]  # the text after the last newline may be a line being written
    return [int(json.loads(line)[EPOCH]) for line in lines if line.strip()]


def mlflow_client(uri: str) -> Any:
    from mlflow_tracking.store import make_client

    return make_client(uri)


def child_runs(uri: str, experiment: str, parent_run_id: str) -> list[Any]:
    """Child runs of a parent run (all statuses)."""
    client = mlflow_client(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )


SWEEP = REPO / "tuning" / "sweep.py"
SWEEP_TIMEOUT_S = 600


def _processes_mentioning(text: str) -> list[tuple[int, bytes]]:
    """(pid, command line) of this user's processes (other than this one) whose command line or
    environment contains `text`."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if needle in cmdline or needle in (entry / "environ").read_bytes():
                found.append((int(entry.name), cmdline))
        except OSError:
            continue
    return found


def kill_processes_mentioning(text: str) -> None:
    """SIGKILL to this user's processes whose command line or environment contains `text`."""
    for pid, _ in _processes_mentioning(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


# Ray titles a worker process after the actor it runs: a Tune function trainable's actor is
# `ImplicitFunc` ("ray::ImplicitFunc.train" while training); idle workers are "ray::IDLE".
TRIAL_WORKER_TITLE = b"ray::ImplicitFunc"


def trial_workers(marker: str) -> list[int]:
    """Pids of the Ray workers running a Tune trial whose environment or command line contains
    `marker` (a Ray temp dir, an auth token), by Ray's process title."""
    return [
        pid
        for pid, cmdline in _processes_mentioning(marker)
        if cmdline.startswith(TRIAL_WORKER_TITLE)
    ]


class SweepProcess:
    """`tuning/sweep.py` in its own session, with its own Ray temp dir (so that what it leaves
    behind after a SIGKILL can be found and stopped); output goes to a log file."""

    def __init__(self, space: Path, root: Path, log: Path, *extra: str) -> None:
        # Short path: Ray's unix sockets live under it (108-byte limit).
        self.ray_tmp = tempfile.mkdtemp(prefix="rf", dir="/tmp")
        self.log = log
        env = {**os.environ, "RAY_TMPDIR": self.ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        command = [sys.executable, str(SWEEP), "--space", str(space), "--output-root", str(root)]
        with open(log, "ab") as stream:
            self.process = subprocess.Popen(
                command + list(extra),
                stdout=stream,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root.parent,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(
        self,
        condition: Callable[[], bool],
        what: str,
        timeout_s: float,
        *,
        interval_s: float = 0.1,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the sweep ended before {what}:\n{self.output()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout_s} s:\n{self.output()[-4000:]}")
            time.sleep(interval_s)

    def trial_workers(self) -> list[int]:
        """Pids of this sweep's Ray workers that run a Tune trial now (found through the
        sweep's Ray temp dir in their environment)."""
        return trial_workers(self.ray_tmp)

    def wait_for_trial_worker(self, timeout_s: float = 300) -> int:
        """The pid of the sweep's one trial worker, once there is exactly one."""
        self.wait_until(lambda: len(self.trial_workers()) == 1, "trial worker", timeout_s)
        return self.trial_workers()[0]

    def finish(self, timeout_s: float = SWEEP_TIMEOUT_S) -> str:
        """Waits for the sweep to exit with status 0 and returns its output."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the sweep did not finish in {timeout_s} s:\n{self.output()[-4000:]}")
        output = self.output()
        assert self.process.returncode == 0, output[-4000:]
        return output

    def kill(self) -> None:
        """SIGKILL to the driver's process group, then to every process of its Ray (the GCS,
        raylet and agents can outlive the driver)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        kill_processes_mentioning(self.ray_tmp)

    def close(self) -> None:
        """Kills whatever is left of the sweep and its Ray, and removes the Ray temp dir."""
        self.kill()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
