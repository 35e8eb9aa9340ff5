"""Connecting to Ray: an existing cluster (RAY_ADDRESS, `ray job submit`) or a local one without
a dashboard, and checking that a trial's resources fit some node before any trial is queued.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from lungsrad.errors import UserError, first_line
from tuning.search_space import ResourceSpec

# Set by the Ray job supervisor in the environment of a `ray job submit` entrypoint.
_JOB_ENV_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def in_ray_job() -> bool:
    """True when this process is the entrypoint of `ray job submit` (its folder is temporary)."""
    return _JOB_ENV_VARIABLE in os.environ


@dataclass(frozen=True)
class ClusterInfo:
    """What the driver connected to."""

    address: str  # GCS address
    is_local: bool  # True: `connect` started a local Ray
    owns_connection: bool  # True: `connect` called ray.init (disconnect undoes it)
    num_nodes: int
    total_cpus: float
    total_gpus: float

    def describe(self) -> str:
        """One line for the console."""
        kind = "local Ray" if self.is_local else "Ray cluster"
        return (
            f"{kind} at {self.address}: {self.num_nodes} node(s), {self.total_cpus:g} CPUs, "
            f"{self.total_gpus:g} GPUs; token authentication: {token_auth_mode()}"
        )


def connect(address: str | None = None, *, num_cpus: int | None = None) -> ClusterInfo:
    """Connects to the cluster at `address` (or RAY_ADDRESS), else starts a local Ray.

    A local Ray uses this machine's CPUs and GPUs and runs no dashboard (Ray's own gRPC
    ports rely on its token authentication, on by default since Ray 2.60). Ray's log lines
    below WARNING are hidden.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    _quiet_ray_notices()
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    owns_connection = not ray.is_initialized()
    if not owns_connection:
        is_local = False
    elif address is not None:
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except Exception as error:  # ConnectionError, AuthenticationError, ... differ by cause
            reason = first_line(error)
            raise UserError(
                f"cannot join the Ray cluster at '{address}' ({reason[:200]}); start it with "
                "`ray start --head`, fix --ray-address / RAY_ADDRESS, and with token "
                "authentication set RAY_AUTH_MODE=token and the cluster's token"
            ) from None
        is_local = False
    else:
        # "local": always a new Ray of this process; without it ray.init joins whatever
        # cluster Ray's temp folder names (a stale `ray_current_cluster` file makes it retry a
        # dead address for minutes, a live `ray start` would be joined silently).
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            dashboard_host="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
        is_local = True
    if owns_connection:
        from tuning.interrupts import reinstall_handlers

        reinstall_handlers()  # ray.init put a SIGTERM handler of its own, which aborts
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    totals = ray.cluster_resources()
    context = ray.get_runtime_context()
    gcs_address = getattr(context, "gcs_address", None) or address or "local"
    return ClusterInfo(
        address=str(gcs_address),
        is_local=is_local,
        owns_connection=owns_connection,
        num_nodes=len(nodes),
        total_cpus=float(totals.get("CPU", 0.0)),
        total_gpus=float(totals.get("GPU", 0.0)),
    )


class _DropTokenAuthEnabledNotice(logging.Filter):
    """Drops Ray's stderr notice that token authentication is on (the secure default this project
    keeps; describe() says so on stdout). Its warning that authentication is OFF stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


class _DropTuneInterruptHints(logging.Filter):
    """Drops Tune's lines on a stop signal (its `Tuner.restore(...)` hint and the like): the
    driver prints what happened and the `--resume` command instead (tuning.interrupts)."""

    _PREFIXES = ("Stop signal received", "Experiment has been interrupted", "Trials did not")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._PREFIXES)


def _quiet_ray_notices() -> None:
    tune_logger = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _DropTuneInterruptHints) for f in tune_logger.filters):
        tune_logger.addFilter(_DropTuneInterruptHints())
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropTokenAuthEnabledNotice) for f in logger.filters):
        logger.addFilter(_DropTokenAuthEnabledNotice())


def token_auth_mode() -> str:
    """Ray's token authentication mode as this process sees it ("token" unless turned off)."""
    return os.environ.get("RAY_AUTH_MODE", "token (default)")


def _check_reachable(address: str) -> None:
    """Fails at once for a host:port GCS address nothing listens on (Ray would retry for
    minutes); other forms ("auto", "ray://...") are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "/" in host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise UserError(
            f"cannot join the Ray cluster at '{address}': nothing answers there ({error}); start "
            "it with `ray start --head` or fix --ray-address / RAY_ADDRESS"
        ) from None


def check_resources(resources: ResourceSpec) -> None:
    """Raises ValueError (one line) when no alive node can ever hold one trial."""
    import ray

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    wanted = {"CPU": resources.cpu, "GPU": resources.gpu, **resources.custom}
    for name, amount in wanted.items():
        if amount <= 0:
            continue
        largest = max((node.get(name, 0.0) for node in nodes), default=0.0)
        if largest + 1e-9 < amount:
            total = sum(node.get(name, 0.0) for node in nodes)
            key = {"CPU": "resources.cpu", "GPU": "resources.gpu"}.get(
                name, f"resources.custom.{name}"
            )
            unit = {"CPU": "CPUs", "GPU": "GPUs"}.get(name, f"'{name}'")
            raise UserError(
                f"{key} asks for {amount:g} {unit} per trial but no node of the Ray cluster has "
                f"that many (largest node: {largest:g}, cluster total: {total:g}); lower {key} "
                "or add nodes that have them"
            )
    for node in nodes:
        if all(node.get(name, 0.0) + 1e-9 >= amount for name, amount in wanted.items()):
            return
    raise UserError(
        f"no single node of the Ray cluster has all of {wanted} for one trial; lower resources "
        "or add a node that has them together"
    )


def disconnect(info: ClusterInfo) -> None:
    """Disconnects from Ray unless the caller had connected before `connect` (then it stays).

    A local Ray this process started is shut down with it; a cluster keeps running.
    """
    import ray

    if info.owns_connection and ray.is_initialized():
        ray.shutdown()
