"""The names of the tags (and the one metric) lungsrad puts on MLflow runs and experiments.

MLflow tags are strings; `lungsrad.*` names are ours, `mlflow.*` names are MLflow's own.
"""

from __future__ import annotations

# Tag names every lungsrad run may carry (MLflow tags are strings).
TAG_ROLE = "lungsrad.role"  # sweep | trial | final | final_seed
TAG_SWEEP = "lungsrad.sweep"  # search-space name
TAG_SWEEP_DIR = "lungsrad.sweep_dir"  # Ray Tune experiment folder (storage path)
TAG_SWEEP_ID = "lungsrad.sweep_id"  # random id of one sweep (its folder name ends with it)
TAG_SEARCH_SPACE = "lungsrad.search_space"  # the YAML file
TAG_TRIAL_ID = "lungsrad.trial_id"  # Ray Tune trial id (stable across retries and --resume)
TAG_TRIAL_NAME = "lungsrad.trial_name"
TAG_VARIANT = "lungsrad.variant"  # base config name of the trial
TAG_VALUES = "lungsrad.values"  # JSON {swept parameter: value label}
TAG_BASE_VALUES = "lungsrad.base_values"  # parent run: JSON {parameter: label at the base config}
TAG_SEED = "lungsrad.seed"
TAG_PROTOCOL = "lungsrad.protocol"
TAG_METRIC = "lungsrad.metric"  # the metric the sweep optimises
TAG_GIT_COMMIT = "lungsrad.git_commit"
TAG_DATA_FINGERPRINT = "lungsrad.data_fingerprint"
TAG_SCAN_BACKEND = "lungsrad.scan_backend"
TAG_DEVICE = "lungsrad.device"
TAG_DEVICE_NAME = "lungsrad.device_name"
TAG_DEVICE_REASON = "lungsrad.device_reason"
TAG_AMP = "lungsrad.amp"
TAG_NODE_ID = "lungsrad.ray_node_id"
TAG_NODE_IP = "lungsrad.ray_node_ip"
TAG_WORKER_PID = "lungsrad.worker_pid"  # the Ray worker process (reused across trials)
TAG_GPU_IDS = "lungsrad.ray_gpu_ids"
TAG_CUDA_VISIBLE_DEVICES = "lungsrad.cuda_visible_devices"
TAG_FAILURE = "lungsrad.failure"  # why the run failed (one line)
TAG_PREVIOUS_FAILURE = "lungsrad.previous_failure"  # failure of an earlier attempt (retried)
TAG_STARTS = "lungsrad.attempts"  # how many times the trial process (re)started this run
TAG_RESUMED_FROM_EPOCH = "lungsrad.resumed_from_epoch"  # last start's checkpoint epoch (0: fresh)
TAG_STOPPED_EARLY = "lungsrad.stopped_early"  # "true": the scheduler stopped the trial
TAG_BEST_EPOCH = "lungsrad.best_epoch"  # the epoch the protocol selected
# "no", or lungsrad.metrics.degenerate_note of the reported epoch ("degenerate: predicts only
# 'normal'"); on a parent run, which seeds of the chosen configuration are degenerate.
TAG_DEGENERATE = "lungsrad.degenerate"
NOT_DEGENERATE = "no"
# A trial run's state as a person reads it: running | retrying | done | stopped early | failed
TAG_TRIAL_STATUS = "lungsrad.trial_status"
PARENT_RUN_TAG = "mlflow.parentRunId"
# The MLflow UI (3.x) opens an experiment by its kind: a training experiment opens on the runs
# table, one without the tag on the GenAI overview (traces, "Detect issues").
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"
RUN_DESCRIPTION_TAG = "mlflow.note.content"  # the run's "Description" in the MLflow UI
# Metric of a finished run: RunResult.train_seconds (training + evaluation epochs).
METRIC_TRAIN_SECONDS = "run.train_seconds"
