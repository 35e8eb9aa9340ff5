"""Names of the keys a trial reports to Tune besides lungsrad's metrics: read by the driver's
callbacks, by tuning.results and by benchmarks. Imports neither Ray nor torch, so reading a
finished sweep loads neither.
"""

from __future__ import annotations

from mlflow_tracking.tags import METRIC_TRAIN_SECONDS
from tuning.cost import COST_DEVICE_SECONDS

# Result key of the run's facts (JSON text): in the first result of each trial process and in its
# last one (tuning.callbacks turns them into tags and params).
FACTS_KEY = "lungsrad_facts"
# Result key of a trial whose loss became NaN/inf (its reason); its checkpoint holds only
# NON_FINITE_FILE, so that a retry fails at once instead of training into the same NaN again.
FAILURE_KEY = "lungsrad_failure"
NON_FINITE_FILE = "non_finite_loss.txt"
NON_FINITE_FAILURE = "non-finite loss"
# Result key of what the driver logs as the finished trial's artifacts (JSON text, in its last
# result only): per-epoch history, the selected epoch's confusion matrices, the selected epoch
# and the training seconds. The driver reads no checkpoint for them.
ARTIFACTS_KEY = "lungsrad_artifacts"
# Where a trial's time went (in its last result; benchmarks/sweep_overhead.py reads them).
TIMING_SETUP = "timing/setup_seconds"  # trial function start -> first epoch (model, data)
TIMING_REPORT = "timing/report_seconds"  # tune.report calls (checkpoints copied to storage)
TIMING_TRIAL = "timing/trial_seconds"  # trial function start -> training finished
TIMING_KEYS = (TIMING_SETUP, TIMING_REPORT, TIMING_TRIAL)
TRAIN_SECONDS = METRIC_TRAIN_SECONDS  # RunResult.train_seconds: training + evaluation epochs


def best_metric_name(metric: str) -> str:
    """Name of the running best of `metric` over the epochs so far (what Tune optimises)."""
    return f"best/{metric}"


# An objective of a multi-objective space (search-space key `metrics`) besides lungsrad's metrics:
# the trial's own device-seconds so far (trial function start -> this epoch, times the GPUs it
# holds, or its CPUs on a CPU-only trial), reported every epoch as best_metric_name of it.
COST_OBJECTIVE = COST_DEVICE_SECONDS
