"""The Ray Tune trial: base config + sampled overrides -> `lungsrad.training.run.run_experiment`,
reporting every epoch to Tune (metrics + checkpoint) and to the trial's MLflow child run.

A retried trial (worker killed, node lost) or a resumed sweep restores Tune's last checkpoint and
continues training from that epoch in the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from lungsrad.config import dump_config, flatten_config
from lungsrad.metrics import EPOCH
from lungsrad.training.run import NonFiniteLossError, RunInfo, RunResult, TrainingCallback
from mlflow_tracking.artifacts import write_run_artifacts
from mlflow_tracking.tracker import (
    METRIC_TRAIN_SECONDS,
    TAG_AMP,
    TAG_BEST_EPOCH,
    TAG_CUDA_VISIBLE_DEVICES,
    TAG_DATA_FINGERPRINT,
    TAG_DEVICE,
    TAG_DEVICE_NAME,
    TAG_DEVICE_REASON,
    TAG_FAILURE,
    TAG_GIT_COMMIT,
    TAG_GPU_IDS,
    TAG_METRIC,
    TAG_NODE_ID,
    TAG_NODE_IP,
    TAG_PREVIOUS_FAILURE,
    TAG_PROTOCOL,
    TAG_RESUMED_FROM_EPOCH,
    TAG_ROLE,
    TAG_SCAN_BACKEND,
    TAG_SEED,
    TAG_STARTS,
    TAG_STOPPED_EARLY,
    TAG_SWEEP,
    TAG_TRIAL_ID,
    TAG_TRIAL_NAME,
    TAG_VALUES,
    TAG_VARIANT,
    TAG_WORKER_PID,
    RunTracker,
    TrackingTarget,
    configure_http_retries,
)
from tuning.search_space import ResolvedTrial, SearchSpace

# The failure tag of a run whose loss became NaN/inf starts with this; a retry of such a trial
# fails at once instead of training into the same NaN again.
NON_FINITE_FAILURE = "non-finite loss"
# Seconds a trial stopped early by the scheduler may spend flushing MLflow before it exits.
STOPPED_FLUSH_S = 10.0
# Where a trial's time went (logged at step 0 of its run; benchmarks/sweep_overhead.py reads them).
TIMING_SETUP = "timing/setup_seconds"  # trial function start -> first epoch (MLflow, model, data)
TIMING_REPORT = "timing/report_seconds"  # per-epoch MLflow logging + tune.report (checkpoints)
TIMING_TRIAL = "timing/trial_seconds"  # trial function start -> training finished
TRAIN_SECONDS = METRIC_TRAIN_SECONDS  # RunResult.train_seconds: training + evaluation epochs


def best_metric_name(metric: str) -> str:
    """Name of the running best of `metric` over the epochs so far (what Tune optimises)."""
    return f"best/{metric}"


@dataclass(frozen=True)
class SweepContext:
    """Everything a trial needs besides its Tune config (sent once through the object store)."""

    space: SearchSpace
    tracking: TrackingTarget
    parent_run_id: str
    git_commit: str
    role: str = "trial"  # MLflow role tag: "trial" (sweep) or "final_seed" (final.py)
    final_flush_s: float = 120.0  # how long a finished trial waits for an unreachable MLflow


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
    import ray
    import torch

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
    """Forwards each epoch to MLflow (buffered) and then to Tune (metrics + checkpoint)."""

    def __init__(
        self,
        tracker: RunTracker,
        *,
        metric: str,
        mode: str,
        best: float | None,
        started: float,
        num_epochs: int,
    ):
        self.tracker = tracker
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.best = best
        self.started = started  # time.perf_counter() when the trial function began
        self.setup_seconds = math.nan
        self.report_seconds = 0.0
        self.num_epochs = num_epochs
        self.last_epoch = 0  # the last epoch trained
        self.final: tuple[dict[str, float], Path] | None = None  # last epoch, reported late

    def timings(self) -> dict[str, float]:
        """Where the trial's time went so far (TIMING_* metrics)."""
        return {
            TIMING_SETUP: self.setup_seconds,
            TIMING_REPORT: self.report_seconds,
            TIMING_TRIAL: time.perf_counter() - self.started,
        }

    def on_run_start(self, info: RunInfo) -> None:
        self.setup_seconds = time.perf_counter() - self.started
        self.tracker.set_tags(
            {
                TAG_DATA_FINGERPRINT: info.data_fingerprint,
                TAG_SCAN_BACKEND: info.scan_backend,
                TAG_DEVICE: info.device,
                TAG_DEVICE_NAME: info.device_name,
                TAG_AMP: info.amp_dtype,
                TAG_RESUMED_FROM_EPOCH: str(info.start_epoch - 1),
            }
        )
        self.tracker.log_params(
            {
                "run.num_parameters": info.num_parameters,
                **{f"run.split_size.{name}": size for name, size in info.split_sizes.items()},
            }
        )
        self.tracker.flush()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        started = time.perf_counter()
        value = metrics.get(self.metric, math.nan)
        if math.isfinite(value) and (self.best is None or self.sign * (value - self.best) > 0):
            self.best = value
        reported = dict(metrics)
        reported[EPOCH] = epoch
        reported[best_metric_name(self.metric)] = math.nan if self.best is None else self.best
        self.last_epoch = epoch
        try:
            # MLflow before Tune: if the process dies in between, the epoch is trained again
            # from the previous checkpoint and its already-stored step is not logged twice.
            self.tracker.log_metrics(reported, step=epoch)
            self.tracker.flush()
            if epoch >= self.num_epochs:
                # The last epoch reaches Tune only once the MLflow run is closed: a scheduler
                # stopping the trial at max_t (SystemExit in tune.report) cannot cut it short.
                self.final = (reported, Path(checkpoint_dir))
                return
            # Copies the checkpoint into the storage path and hands the result to the driver.
            tune.report(reported, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        finally:
            self.report_seconds += time.perf_counter() - started

    def report_final(self) -> None:
        """Hands the last epoch (metrics + checkpoint) to Tune."""
        if self.final is not None:
            reported, folder = self.final
            tune.report(reported, checkpoint=tune.Checkpoint.from_directory(str(folder)))


def _best_in_history(history: list[dict[str, float]], metric: str, mode: str) -> float | None:
    values = [row[metric] for row in history if math.isfinite(row.get(metric, math.nan))]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _restore_point(checkpoint: tune.Checkpoint | None, workdir: Path) -> Path | None:
    """Copies Tune's checkpoint next to the run and returns its checkpoint.pt (None: fresh)."""
    if checkpoint is None:
        return None
    target = workdir / "restored_checkpoint"
    shutil.rmtree(target, ignore_errors=True)
    local = Path(checkpoint.to_directory(str(target)))
    files = sorted(local.rglob("checkpoint.pt"))
    if not files:
        raise FileNotFoundError(f"Tune checkpoint {checkpoint.path} holds no checkpoint.pt")
    return files[0]


def _trial_tags(
    context: SweepContext, trial: ResolvedTrial, device: str, reason: str
) -> dict[str, str]:
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    # The address the node joined the cluster with (ray.util.get_node_ip_address() would give
    # the host's routable address even for a node started on 127.0.0.1).
    node_ip = next(
        (n["NodeManagerAddress"] for n in ray.nodes() if n.get("NodeID") == node_id),
        ray.util.get_node_ip_address(),
    )
    tune_context = tune.get_context()
    return {
        TAG_ROLE: context.role,
        TAG_SWEEP: context.space.name,
        TAG_TRIAL_NAME: tune_context.get_trial_name(),
        TAG_VARIANT: trial.variant,
        TAG_VALUES: json.dumps(trial.values, sort_keys=True),
        TAG_SEED: str(trial.seed),
        TAG_PROTOCOL: trial.config.train.protocol,
        TAG_METRIC: context.space.metric,
        TAG_GIT_COMMIT: context.git_commit,
        TAG_NODE_ID: node_id,
        TAG_NODE_IP: node_ip,
        TAG_WORKER_PID: str(os.getpid()),
        TAG_GPU_IDS: ",".join(str(i) for i in ray.get_gpu_ids()) or "none",
        TAG_CUDA_VISIBLE_DEVICES: os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        TAG_DEVICE: device,
        TAG_DEVICE_REASON: reason,
    }


def _set_cpu_threads(config_threads: int | None) -> None:
    """Uses as many torch threads as CPUs Ray reserved for the trial (unless the config says)."""
    import torch

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
    from lungsrad.training.run import run_experiment

    started = time.perf_counter()
    assert context is not None, "train_trial needs context= (tune.with_parameters)"
    # With reuse_actors, Tune waits this long (default 2 s) for a stopped trial's function to
    # return before it reuses the process; closing the MLflow run takes longer than that.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(int(STOPPED_FLUSH_S) + 50))
    # Ray Train logs every persisted checkpoint at INFO; the driver prints progress instead.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    configure_http_retries()
    trial = context.space.resolve(config)
    experiment = trial.config
    device, reason = choose_device(experiment.train.device)
    _set_cpu_threads(experiment.train.num_threads)
    trial_id = tune.get_context().get_trial_id()
    workdir = Path.cwd()  # Ray's per-trial working folder on this node
    trial_tags = _trial_tags(context, trial, device, reason)
    tracker = RunTracker(
        context.tracking,
        run_name=trial.describe_short()[:240],
        parent_run_id=context.parent_run_id,
        identity={TAG_TRIAL_ID: trial_id},
        tags=trial_tags,
        dedupe_key=EPOCH,
        final_flush_s=context.final_flush_s,
        pending_path=workdir / "mlflow_pending.json",
    )
    tracker.flush(force=True)
    previous = _existing_tags(tracker)
    failure = previous.get(TAG_FAILURE)
    if failure is not None and failure.startswith(NON_FINITE_FAILURE):
        tracker.finish("FAILED")
        raise NonFiniteLossError(f"{failure} (not retried: the same epoch diverges again)")
    # A restart (retry or --resume) continues the same run: refresh what changes per attempt.
    tags = {**trial_tags, TAG_STARTS: str(_attempts(previous) + 1)}
    if failure is not None:
        tags[TAG_PREVIOUS_FAILURE] = failure
        tracker.delete_tags([TAG_FAILURE])
    tracker.set_tags(tags)
    tracker.log_params(flatten_config(experiment))
    tracker.log_text(dump_config(experiment), "config.yaml")

    resume_from = _restore_point(tune.get_checkpoint(), workdir)
    best = None
    if resume_from is not None:
        from lungsrad.training.checkpoints import read_checkpoint

        history = read_checkpoint(resume_from).get("history") or []
        best = _best_in_history(history, context.space.metric, context.space.mode)
    reporter = _TrialReporter(
        tracker,
        metric=context.space.metric,
        mode=context.space.mode,
        best=best,
        started=started,
        num_epochs=experiment.train.num_epochs,
    )
    output_dir = workdir / "run"
    title = f"{context.space.name} {trial.describe()}"
    try:
        result = run_experiment(
            experiment,
            output_dir=output_dir,
            feature_set=feature_set,
            callbacks=[reporter],
            resume=True,
            resume_from=resume_from,
            device=device,
            show_progress=False,
        )
    except NonFiniteLossError as error:
        tracker.set_tags({TAG_FAILURE: f"{NON_FINITE_FAILURE}: {_one_line(error)}"})
        tracker.finish("FAILED")
        raise
    except SystemExit:
        # The scheduler stopped the trial early (SystemExit in tune.report). Tune may end this
        # process at once, so only the quick part happens here; the driver's MlflowRunCloser
        # adds the curves and confusion matrix from the checkpoint Tune kept.
        tracker.final_flush_s = min(tracker.final_flush_s, STOPPED_FLUSH_S)
        tracker.set_tags({TAG_STOPPED_EARLY: "true"})
        tracker.log_metrics(reporter.timings(), step=0)
        tracker.finish("FINISHED")
        raise
    except BaseException as error:
        tracker.set_tags({TAG_FAILURE: f"{type(error).__name__}: {_one_line(error)}"})
        tracker.finish("FAILED")
        raise
    _log_result(tracker, result, workdir, title=title)
    tracker.log_metrics(reporter.timings(), step=0)
    tracker.finish("FINISHED")
    try:
        reporter.report_final()
    finally:
        _free_disk(output_dir)


def _log_result(tracker: RunTracker, result: RunResult, workdir: Path, *, title: str) -> None:
    folder = write_run_artifacts(
        workdir / "mlflow_artifacts",
        history=result.history,
        confusion=result.confusion,
        title=title,
    )
    tracker.log_artifacts(folder)
    tracker.set_tags({TAG_BEST_EPOCH: str(result.best_epoch)})
    tracker.log_metrics({TRAIN_SECONDS: result.train_seconds}, step=0)


def _free_disk(output_dir: Path) -> None:
    # Training checkpoints of a finished trial are not needed (Tune keeps its own latest one);
    # DASS-small checkpoints are hundreds of MB each, and a sweep runs many trials.
    from lungsrad.training.checkpoints import BEST_FILE, epoch_folder

    shutil.rmtree(epoch_folder(output_dir, 1).parent, ignore_errors=True)
    (output_dir / BEST_FILE).unlink(missing_ok=True)


def _attempts(tags: dict[str, str]) -> int:
    try:
        return int(tags.get(TAG_STARTS, "0"))
    except ValueError:
        return 0


def _existing_tags(tracker: RunTracker) -> dict[str, str]:
    """Tags of the run a restarted trial continues ({} for a new run or when MLflow is down)."""
    if not tracker.reused_existing or tracker.run_id is None:
        return {}
    try:
        return dict(tracker.target.client().get_run(tracker.run_id).data.tags)
    except Exception as error:  # MLflow unreachable: behave as a first start
        warnings.warn(f"could not read MLflow run {tracker.run_id}: {error}", stacklevel=2)
        return {}


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
