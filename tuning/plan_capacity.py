"""How many trials of a sweep can run at once, for `sweep.py --plan`, without starting or joining
Ray: the nodes of the cluster that --ray-address / RAY_ADDRESS names, read from its dashboard's
HTTP state API (`/api/v0/nodes`), else this machine's CPUs and GPUs (what a local Ray would get).
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lungsrad.errors import first_line
from tuning.search_space import ResourceSpec

DASHBOARD_PORT = 8265  # Ray's default dashboard port
_TIMEOUT_S = 5


@dataclass(frozen=True)
class Capacity:
    """The resources of each node the sweep would see."""

    where: str  # "on this machine", "on the Ray cluster at ..."
    nodes: tuple[dict[str, float], ...]  # each node's resources (Ray names: CPU, GPU, custom)
    note: str = ""  # why a named cluster was not read

    def describe(self) -> str:
        cpus = sum(node.get("CPU", 0.0) for node in self.nodes)
        gpus = sum(node.get("GPU", 0.0) for node in self.nodes)
        text = f"{self.where} ({len(self.nodes)} node(s), {cpus:g} CPUs, {gpus:g} GPUs)"
        return f"{text} [{self.note}]" if self.note else text

    def concurrent(self, resources: ResourceSpec, max_concurrent: int | None) -> int:
        """Trials that fit at once: per node, the fewest of its amount / the amount a trial
        asks, for each resource asked; summed over nodes; capped by max_concurrent_trials."""
        wanted = {"CPU": resources.cpu, "GPU": resources.gpu, **resources.custom}
        total = 0
        for node in self.nodes:
            fits = [
                math.floor(node.get(name, 0.0) / amount + 1e-9)
                for name, amount in wanted.items()
                if amount > 0
            ]
            total += min(fits) if fits else 1
        return min(total, max_concurrent) if max_concurrent else total


def read_capacity(address: str | None, resources: ResourceSpec) -> Capacity:
    """The cluster `address` (or RAY_ADDRESS) names, read over HTTP, else this machine."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address not in ("local", "auto"):
        url = dashboard_url(address)
        try:
            nodes = read_cluster_nodes(url)
        except (OSError, ValueError, KeyError, TypeError) as error:
            machine = this_machine(resources)
            note = f"the Ray cluster at {address} was not read ({first_line(error)[:120]})"
            return Capacity(machine.where, machine.nodes, note)
        return Capacity(f"on the Ray cluster at {url}", nodes)
    return this_machine(resources)


def dashboard_url(address: str) -> str:
    """The dashboard of a cluster address: an http(s) address as is, else its host at port 8265
    (a GCS address host:6379 or ray://host:10001)."""
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    host = urlsplit(address if "://" in address else f"ray://{address}").hostname or address
    return f"http://{host}:{DASHBOARD_PORT}"


def read_cluster_nodes(url: str) -> tuple[dict[str, float], ...]:
    """The alive nodes' total resources from the dashboard's state API (with Ray's token
    authentication token when there is one)."""
    request = urllib.request.Request(f"{url}/api/v0/nodes?limit=10000")
    token = ray_auth_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        payload = json.loads(response.read().decode("utf-8"))
    rows = payload["data"]["result"]["result"]
    nodes = tuple(
        {name: float(value) for name, value in row.get("resources_total", {}).items()}
        for row in rows
        if row.get("state") == "ALIVE"
    )
    if not nodes:
        raise ValueError("no alive node yet")
    return nodes


def ray_auth_token() -> str | None:
    """The token Ray's own clients send: RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH
    names, else ~/.ray/auth_token; None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def this_machine(resources: ResourceSpec) -> Capacity:
    """This machine's CPUs (those this process may use) and, when trials ask for GPUs, its
    NVIDIA GPUs (CUDA_VISIBLE_DEVICES when set, else the /dev/nvidiaN devices; torch is not
    loaded for it): what a local Ray started by the sweep would hold."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    node = {"CPU": float(cpus or 1)}
    if resources.gpu > 0:
        node["GPU"] = float(visible_gpus())
    return Capacity("on this machine", (node,))


def visible_gpus() -> int:
    """NVIDIA GPUs this process would see."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([item for item in visible.split(",") if item.strip() and item.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia*") if p.name[len("nvidia") :].isdigit()])
