"""The Ray Tune trial: base config + sampled overrides -> `lungsrad.training.run.run_experiment`,
reporting every epoch to Tune only (metrics + checkpoint, and once per process the run's facts:
device, node, worker pid; in the last one the run's history, confusion matrices, selected epoch
and seconds). The trial never imports MLflow: the driver's `tuning.callbacks.MlflowLogger` writes
the trial's MLflow run from what Tune hands it.

A retried trial (worker killed, node lost) or a resumed sweep restores Tune's last checkpoint and
continues training from that epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from lungsrad.checkpoint_format import read_lungsrad_checkpoint
from lungsrad.errors import first_line
from lungsrad.metrics import EPOCH
from lungsrad.training.checkpoint_files import BEST_FILE, epoch_folder
from lungsrad.training.run import (
    NonFiniteLossError,
    RunInfo,
    RunResult,
    TrainingCallback,
    run_experiment,
)
from tuning.cost import COST_PEAK_GPU_MEMORY, resource_units
from tuning.result_keys import (
    ARTIFACTS_KEY,
    COST_OBJECTIVE,
    FACTS_KEY,
    FAILURE_KEY,
    NON_FINITE_FAILURE,
    NON_FINITE_FILE,
    TIMING_REPORT,
    TIMING_SETUP,
    TIMING_TRIAL,
    best_metric_name,
)
from tuning.search_space import SearchSpace
from tuning.sweep_assets import trial_weights


@dataclass(frozen=True)
class SweepContext:
    """Everything a trial needs besides its Tune config (sent once through the object store)."""

    space: SearchSpace
    # Object refs of the checkpoints' weights the driver read, by model.checkpoint
    # (tuning.sweep_assets); a trial fetches only its own.
    shipped_weights: Mapping[str, Any] = field(default_factory=dict)


def decide_device(
    requested: str,
    *,
    gpu_ids: list[str],
    visible_devices: str,
    cuda_device_count: int,
    node: str,
    torch_build: str,
) -> tuple[str, str]:
    """("cuda" | "cpu", reason) for a trial, from what Ray assigned and what torch can see.

    CUDA is used whenever Ray gave the trial a GPU; a trial that asked for no GPU never touches
    one (it would share a device Ray gave to another trial). A GPU that Ray assigned but torch
    cannot see is a misconfigured node: an error, never a silent (100x slower) CPU run.

    Args:
        requested: train.device of the trial's config.
        gpu_ids: ray.get_gpu_ids() as strings.
        visible_devices: CUDA_VISIBLE_DEVICES of the worker ("<unset>" when unset).
        cuda_device_count: CUDA devices torch sees (0 when CUDA is unavailable).
        node: the Ray node, for the error ("node <id> (<ip>)").
        torch_build: torch's version and CUDA build, for the error.

    Raises:
        ValueError: Ray assigned a GPU that torch cannot see (one line: node, devices, fix).
    """
    if requested == "cpu":
        return "cpu", "train.device is 'cpu' in the config"
    if not gpu_ids:
        return "cpu", "the trial asked Ray for no GPU (resources.gpu: 0)"
    assigned = ",".join(gpu_ids)
    if cuda_device_count > 0:
        return "cuda", (
            f"Ray assigned GPU {assigned} (CUDA_VISIBLE_DEVICES={visible_devices}); torch sees "
            f"{cuda_device_count} device(s)"
        )
    raise ValueError(
        f"Ray assigned GPU {assigned} to this trial on {node} with CUDA_VISIBLE_DEVICES="
        f"{visible_devices}, but torch ({torch_build}) sees no CUDA device there; fix that "
        "node's driver or torch build (a CUDA build of torch), start its Ray with --num-gpus 0 "
        "if it has no usable GPU, or set resources.gpu: 0 or train.device: cpu to train on CPU"
    )


def choose_device(requested: str) -> tuple[str, str]:
    """decide_device with this worker's Ray assignment, environment and torch."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    node_id = ray.get_runtime_context().get_node_id()
    return decide_device(
        requested,
        gpu_ids=[str(i) for i in ray.get_gpu_ids()],
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        cuda_device_count=count,
        node=f"Ray node {node_id} ({ray.util.get_node_ip_address()})",
        torch_build=f"torch {torch.__version__}, CUDA build {torch.version.cuda}",
    )


class _TrialReporter(TrainingCallback):
    """Hands each epoch to Tune (metrics + checkpoint), with the run's facts in the first.

    Besides the running best of the sweep metric it reports, as `best/<name>`, each tracked
    metric (the other objectives and the constraints of a multi-objective space) at the epoch
    where the sweep metric was best so far, so that a trial's objectives are one model's; the
    cost objective is the trial's device-seconds so far."""

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        best: float | None,
        started: float,
        num_epochs: int,
        facts: dict[str, Any],
        tracked: tuple[str, ...] = (),
        snapshot: dict[str, float] | None = None,
        device_units: float = 1.0,
    ):
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = best
        self.tracked = tracked
        self.snapshot = dict(snapshot or {})  # tracked metrics at the best epoch so far
        self.device_units = device_units  # GPUs held (CPUs on a CPU-only trial)
        self.started = started  # time.perf_counter() when the trial function began
        self.num_epochs = num_epochs
        self.setup_seconds = math.nan
        self.report_seconds = 0.0
        self.facts = facts  # what the driver's MLflow logger records as tags and params
        self.facts_sent = False
        self.last_epoch = 0  # the last epoch reported
        self.final: tuple[dict[str, Any], Path] | None = None  # the last epoch, reported late
        self.artifacts: dict[str, Any] | None = None  # ARTIFACTS_KEY of the final result

    def on_run_start(self, info: RunInfo) -> None:
        self.setup_seconds = time.perf_counter() - self.started
        self.last_epoch = info.start_epoch - 1
        self.facts.update(
            data_fingerprint=info.data_fingerprint,
            scan_backend=info.scan_backend,
            device_name=info.device_name,
            amp=info.amp_dtype,
            resumed_from_epoch=info.start_epoch - 1,
            num_parameters=info.num_parameters,
            split_sizes=info.split_sizes,
        )

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        value = metrics.get(self.metric, math.nan)
        if math.isfinite(value) and (self.best is None or self.sign * (value - self.best) > 0):
            self.best = value
            self.snapshot = {name: float(metrics.get(name, math.nan)) for name in self.tracked}
        reported: dict[str, Any] = dict(metrics)
        reported[EPOCH] = epoch
        reported[best_metric_name(self.metric)] = math.nan if self.best is None else self.best
        reported.update(self.tracked_values())
        if epoch >= self.num_epochs:
            # The last epoch reaches Tune once the run returned, with the trial's timings.
            self.final = (reported, Path(checkpoint_dir))
            return
        self._report(reported, Path(checkpoint_dir))

    def tracked_values(self) -> dict[str, float]:
        """`best/<name>` of each tracked metric (NaN before the sweep metric had a value)."""
        values = {}
        for name in self.tracked:
            if name == COST_OBJECTIVE:
                value = (time.perf_counter() - self.started) * self.device_units
            else:
                value = self.snapshot.get(name, math.nan)
            values[best_metric_name(name)] = value
        return values

    def on_run_end(self, result: RunResult) -> None:
        # What the driver logs as the run's artifacts, so that it reads no checkpoint.pt.
        self.artifacts = {
            "history": result.history,
            "confusion": result.confusion.tolist(),
            "device_confusion": {
                device: matrix.tolist() for device, matrix in result.device_confusion.items()
            },
            "best_epoch": result.best_epoch,
            "train_seconds": result.train_seconds,
        }

    def _report(self, reported: dict[str, Any], folder: Path) -> None:
        started = time.perf_counter()
        if not self.facts_sent or TIMING_TRIAL in reported:
            self.facts["trial_imports_mlflow"] = "mlflow" in sys.modules
            reported[FACTS_KEY] = json.dumps(self.facts, sort_keys=True)
            self.facts_sent = True
        self.last_epoch = int(reported.get(EPOCH, self.last_epoch))
        if self.facts.get("device") == "cuda":
            # Peak of this trial process (a reused worker resets it when the trial starts).
            reported[COST_PEAK_GPU_MEMORY] = torch.cuda.max_memory_allocated() / 2**20
        try:
            # Copies the checkpoint into the storage path and hands the result to the driver.
            tune.report(reported, checkpoint=tune.Checkpoint.from_directory(str(folder)))
        finally:
            self.report_seconds += time.perf_counter() - started

    def report_final(self) -> None:
        """Hands the last epoch (metrics + checkpoint) to Tune, with the trial's timings."""
        if self.final is None:
            return
        reported, folder = self.final
        reported[TIMING_SETUP] = self.setup_seconds
        reported[TIMING_REPORT] = self.report_seconds
        reported[TIMING_TRIAL] = time.perf_counter() - self.started
        if self.artifacts is not None:
            reported[ARTIFACTS_KEY] = json.dumps(self.artifacts)
        self._report(reported, folder)

    def report_failure(self, failure: str, scratch: Path) -> None:
        """Hands the failure to Tune (see FAILURE_KEY)."""
        marker = scratch / "non_finite_checkpoint"
        shutil.rmtree(marker, ignore_errors=True)
        marker.mkdir(parents=True)
        (marker / NON_FINITE_FILE).write_text(failure + "\n", encoding="utf-8")
        best = math.nan if self.best is None else self.best
        self._report(
            {
                EPOCH: self.last_epoch,
                best_metric_name(self.metric): best,
                **self.tracked_values(),
                FAILURE_KEY: failure,
            },
            marker,
        )


def _best_in_history(history: list[dict[str, float]], metric: str, mode: str) -> float | None:
    values = [row[metric] for row in history if math.isfinite(row.get(metric, math.nan))]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _snapshot_in_history(
    history: list[dict[str, float]], metric: str, best: float | None, tracked: tuple[str, ...]
) -> dict[str, float]:
    """The tracked metrics of the first epoch where `metric` reached `best` ({} when none)."""
    for row in history:
        if best is not None and row.get(metric) == best:
            return {name: float(row.get(name, math.nan)) for name in tracked}
    return {}


def _restore_point(checkpoint: tune.Checkpoint | None, workdir: Path) -> Path | None:
    """Copies Tune's checkpoint next to the run and returns its checkpoint.pt (None: fresh).

    Raises NonFiniteLossError when the checkpoint is the marker of a diverged run."""
    if checkpoint is None:
        return None
    target = workdir / "restored_checkpoint"
    shutil.rmtree(target, ignore_errors=True)
    local = Path(checkpoint.to_directory(str(target)))
    if (local / NON_FINITE_FILE).is_file():
        failure = (local / NON_FINITE_FILE).read_text(encoding="utf-8").strip()
        raise NonFiniteLossError(f"{failure} (not retried: the same epoch diverges again)")
    files = sorted(local.rglob("checkpoint.pt"))
    if not files:
        raise FileNotFoundError(f"Tune checkpoint {checkpoint.path} holds no checkpoint.pt")
    return files[0]


def _trial_facts(device: str, reason: str) -> dict[str, Any]:
    """Where the trial runs (the driver's MLflow logger tags them)."""
    node_id = ray.get_runtime_context().get_node_id()
    # The address the node joined the cluster with (ray.util.get_node_ip_address() would give
    # the host's routable address even for a node started on 127.0.0.1).
    node_ip = next(
        (n["NodeManagerAddress"] for n in ray.nodes() if n.get("NodeID") == node_id),
        ray.util.get_node_ip_address(),
    )
    return {
        "node_id": node_id,
        "node_ip": node_ip,
        "worker_pid": os.getpid(),
        "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()) or "none",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        "device": device,
        "device_reason": reason,
    }


def _set_cpu_threads(config_threads: int | None) -> None:
    """Uses as many torch threads as CPUs Ray reserved for the trial (unless the config says)."""
    if config_threads is not None:
        return
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))


def train_trial(
    config: dict[str, Any],
    feature_set: Any = None,
    context: SweepContext | None = None,
) -> None:
    """The Tune function trainable: trains one configuration of the search space.

    Args:
        config: the Tune trial config (swept parameters by name, "seed", "variant", "point").
        feature_set: the sweep's FeatureSet from the object store; None: built from data.root.
        context: sweep-wide settings (given through tune.with_parameters).
    """
    started = time.perf_counter()
    assert context is not None, "train_trial needs context= (tune.with_parameters)"
    # Ray Train logs every persisted checkpoint at INFO; the driver prints progress instead.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    experiment = context.space.resolve(config).config
    device, reason = choose_device(experiment.train.device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _set_cpu_threads(experiment.train.num_threads)
    # The driver's copy of model.checkpoint: the path is not opened on this node.
    initial_weights, weight_facts = trial_weights(context.shipped_weights, experiment.model)
    workdir = Path.cwd()  # Ray's per-trial working folder on this node
    resume_from = _restore_point(tune.get_checkpoint(), workdir)
    best = None
    tracked = context.space.tracked_metrics
    snapshot: dict[str, float] = {}
    if resume_from is not None:
        history = read_lungsrad_checkpoint(resume_from).get("history") or []
        best = _best_in_history(history, context.space.metric, context.space.mode)
        snapshot = _snapshot_in_history(history, context.space.metric, best, tracked)
    reporter = _TrialReporter(
        metric=context.space.metric,
        mode=context.space.mode,
        best=best,
        started=started,
        num_epochs=experiment.train.num_epochs,
        facts={**_trial_facts(device, reason), **weight_facts},
        tracked=tracked,
        snapshot=snapshot,
        device_units=resource_units(context.space.resources.as_dict())[1],
    )
    output_dir = workdir / "run"
    try:
        run_experiment(
            experiment,
            output_dir=output_dir,
            feature_set=feature_set,
            callbacks=[reporter],
            resume=True,
            resume_from=resume_from,
            device=device,
            show_progress=False,
            initial_weights=initial_weights,
        )
    except NonFiniteLossError as error:
        reporter.report_failure(f"{NON_FINITE_FAILURE}: {first_line(error)}", workdir)
        raise
    try:
        reporter.report_final()
    finally:
        _free_disk(output_dir)


def _free_disk(output_dir: Path) -> None:
    # Training checkpoints of a finished trial are not needed (Tune keeps its own latest one);
    # DASS-small checkpoints are hundreds of MB each, and a sweep runs many trials.
    shutil.rmtree(epoch_folder(output_dir, 1).parent, ignore_errors=True)
    (output_dir / BEST_FILE).unlink(missing_ok=True)
