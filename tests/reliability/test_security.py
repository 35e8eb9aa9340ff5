"""Security defaults (issue 6): what the project starts listens on 127.0.0.1 only (MLflow server,
Ray dashboard), the local Ray of a sweep refuses clients without its token, and the
credentials of an http tracking URI reach neither MLflow params/tags nor the sweep's output.

Bound addresses are read from /proc/net/tcp{,6} (no psutil in the environment). Redaction of
single messages is covered in tests/mlflow_tracking/test_uri.py and test_run_writer.py; here a
whole sweep runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tuning"))
from sweep_helpers import SWEEP, RayCluster, mlflow_client, write_tiny_space  # noqa: E402

from lungsrad.data.synthetic import write_synthetic_dataset  # noqa: E402
from mlflow_tracking.server import LocalTrackingServer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-sweep-secret"
LISTEN = "0A"


def _address(hex_address: str, is_ipv6: bool) -> str:
    if not is_ipv6:
        return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    words = [hex_address[i : i + 8] for i in range(0, 32, 8)]
    # Each 32-bit word is stored little-endian.
    raw = "".join(word[6:8] + word[4:6] + word[2:4] + word[0:2] for word in words)
    return ":".join(raw[i : i + 4] for i in range(0, 32, 4))


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port` (IPv4 dotted, IPv6 as 8 groups)."""
    found = set()
    for table, is_ipv6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            hex_address, hex_port = local.split(":")
            if state == LISTEN and int(hex_port, 16) == port:
                found.add(_address(hex_address, is_ipv6))
    return found


LOOPBACK = {"127.0.0.1", "0000:0000:0000:0000:0000:0000:0000:0001"}


def test_proc_net_reader_sees_a_loopback_listener() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert listening_addresses(server.getsockname()[1]) == {"127.0.0.1"}


@pytest.mark.mlflow
@pytest.mark.slow
def test_mlflow_server_binds_loopback_only(tmp_path: Path) -> None:
    with LocalTrackingServer(tmp_path / "mlflow") as server:
        addresses = listening_addresses(server.port)
    assert addresses, f"nothing listens on port {server.port}"
    assert addresses <= LOOPBACK, addresses


@pytest.mark.ray
@pytest.mark.slow
def test_ray_dashboard_binds_loopback_only() -> None:
    cluster = RayCluster()
    try:
        cluster.start_head(num_cpus=1)
        addresses = listening_addresses(cluster.dashboard_port)
    finally:
        cluster.stop()
    assert addresses, f"nothing listens on the dashboard port {cluster.dashboard_port}"
    assert addresses <= LOOPBACK, addresses


@pytest.mark.ray
@pytest.mark.mlflow
@pytest.mark.slow
def test_tracking_uri_credentials_never_reach_mlflow_or_the_output(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_synthetic_dataset(data, num_recordings=8, seed=0)
    space = write_tiny_space(
        tmp_path / "secret_sweep.yaml",
        data=data,
        base={"train": {"num_epochs": 1}},
        parameters={"method.patch_mix.alpha": {"grid": [1.0]}},
        search="grid",
        max_failures=0,
    )
    with LocalTrackingServer(tmp_path / "mlflow") as server:
        uri = server.uri.replace("http://", f"http://alice:{PASSWORD}@")
        completed = subprocess.run(
            [
                sys.executable, str(SWEEP),
                "--space", str(space),
                "--tracking-uri", uri,
                "--output-root", str(tmp_path / "runs"),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=500,
        )  # fmt: skip
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, output[-4000:]
        client = mlflow_client(server.uri)
        experiment = client.get_experiment_by_name("lungsrad-secret_sweep")
        runs = client.search_runs([experiment.experiment_id])
    assert PASSWORD not in output and "alice:" not in output
    assert len(runs) >= 2  # parent + one trial
    for run in runs:
        stored = json.dumps({"params": run.data.params, "tags": run.data.tags})
        assert PASSWORD not in stored and "alice:" not in stored, run.info.run_id
    saved = "".join(
        path.read_text(errors="replace")
        for path in (tmp_path / "runs").rglob("*")
        if path.is_file() and path.suffix in {".json", ".yaml", ".md", ".txt"}
    )
    assert PASSWORD not in saved


_JOIN = (
    "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
    "print('JOINED', ray.cluster_resources().get('CPU'))"
)
_LOCAL_RAY_PROBE = f"""
import os, subprocess, sys
from tuning.cluster import connect, disconnect
info = connect(None, num_cpus=1)  # the local Ray a sweep starts
try:
    for label, token in (("wrong", "0" * 32), ("own", None)):
        env = {{**os.environ, "RAY_AUTH_MODE": "token"}}
        env.pop("RAY_AUTH_TOKEN", None)
        if token is not None:
            env["RAY_AUTH_TOKEN"] = token
        joined = subprocess.run(
            [sys.executable, "-c", {_JOIN!r}, info.address],
            env=env, capture_output=True, text=True, timeout=180,
        )
        print(label, joined.returncode, "JOINED" in joined.stdout, flush=True)
finally:
    disconnect(info)
"""


@pytest.mark.ray
@pytest.mark.slow
def test_the_local_ray_of_a_sweep_refuses_a_client_without_its_token(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", _LOCAL_RAY_PROBE],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ra", dir="/tmp")},
        timeout=500,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    lines = dict(line.split(" ", 1) for line in completed.stdout.splitlines() if " " in line)
    assert lines.get("wrong") == "1 False", output[-3000:]  # another token: refused
    assert lines.get("own") == "0 True", output[-3000:]  # the user's own token: joins
