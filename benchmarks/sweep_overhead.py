"""Per-trial overhead of Ray Tune + MLflow: a trial's wall time (seen by the driver) against the
training time inside it (RunResult.train_seconds), for a small sweep of tiny DASS trials on
synthetic data, on a local Ray with a SQLite MLflow store.

    python benchmarks/sweep_overhead.py [--trials 4] [--epochs 3] [--concurrency 1]

Columns: wall = driver's trial start -> trial complete; setup = trial function start -> first
epoch (MLflow run, model, optimizer); report = per-epoch MLflow logging + tune.report (checkpoint
copy into the storage path); train = training + per-epoch evaluation; overhead = wall - train.
The first trial of each Ray worker process pays its imports and first-use costs (torch, MLflow
store); later trials reuse the process (TuneConfig(reuse_actors=True)).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from ray import tune  # noqa: E402

from mlflow_tracking.store import make_client  # noqa: E402
from mlflow_tracking.tags import TAG_TRIAL_ID, TAG_WORKER_PID  # noqa: E402
from mlflow_tracking.uri import sqlite_uri  # noqa: E402
from tuning.driver import run_sweep  # noqa: E402
from tuning.result_keys import TIMING_REPORT, TIMING_SETUP, TIMING_TRIAL, TRAIN_SECONDS  # noqa: E402
from tuning.search_space import load_search_space  # noqa: E402
from tuning.settings import DriverSettings  # noqa: E402

WALL: dict[str, list[float]] = {}  # trial id -> [start, end] (driver clock)


class TrialClock(tune.Callback):
    """Driver-side wall time of each trial."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        WALL[trial.trial_id] = [time.monotonic(), float("nan")]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        WALL[trial.trial_id][1] = time.monotonic()


def write_space(
    folder: Path, *, trials: int, epochs: int, steps: int, concurrency: int, data: Path | None
) -> Path:
    smoke = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    base = smoke["base_overrides"]
    base["train"].update({"num_epochs": epochs, "max_steps_per_epoch": steps})
    if data is not None:
        base["data"]["root"] = str(data)
    document = {
        "name": "overhead",
        "base_overrides": base,
        "parameters": {"method.patch_mix.alpha": {"grid": [0.5 + 0.25 * i for i in range(trials)]}},
        "search": "grid",
        "resources": {"cpu": 1},
        "max_concurrent_trials": concurrency,
        "max_failures": 0,
    }
    path = folder / "overhead.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per epoch")
    parser.add_argument("--concurrency", type=int, default=1, help="trials at a time")
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: synthetic)")
    parser.add_argument("--output-root", type=Path, default=None, help="default: a temp folder")
    args = parser.parse_args(argv)

    root = (args.output_root or Path(tempfile.mkdtemp(prefix="sweep_overhead_"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        from lungsrad.data.synthetic import write_synthetic_dataset

        data = root / "synthetic_data"
        if not data.exists():
            write_synthetic_dataset(data, num_recordings=24, seed=0)
    space = load_search_space(
        write_space(
            root,
            trials=args.trials,
            epochs=args.epochs,
            steps=args.steps,
            concurrency=args.concurrency,
            data=data.resolve(),
        )
    )
    settings = DriverSettings(
        output_root=root,
        storage_path=root / "ray_results",
        tracking_uri=sqlite_uri(root / "mlflow.db"),
        experiment="sweep-overhead",
        ray_address=None,
    )
    started = time.monotonic()
    outcome = run_sweep(space, settings, callbacks=[TrialClock()])
    sweep_seconds = time.monotonic() - started

    client = make_client(settings.tracking_uri)
    experiment_id = client.get_experiment_by_name(settings.experiment).experiment_id
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'"
    )
    rows = []
    seen_workers: set[str] = set()
    for run in sorted(runs, key=lambda r: r.info.start_time):
        worker = run.data.tags.get(TAG_WORKER_PID, "?")
        cold = worker not in seen_workers
        seen_workers.add(worker)
        trial_id = run.data.tags[TAG_TRIAL_ID]
        start, end = WALL.get(trial_id, [float("nan")] * 2)
        metrics = run.data.metrics
        wall = end - start
        train = metrics.get(TRAIN_SECONDS, float("nan"))
        rows.append(
            {
                "trial": trial_id,
                "wall": wall,
                "in_trial": metrics.get(TIMING_TRIAL, float("nan")),
                "setup": metrics.get(TIMING_SETUP, float("nan")),
                "report": metrics.get(TIMING_REPORT, float("nan")),
                "train": train,
                "overhead": wall - train,
                "cold": cold,
            }
        )
    header = (
        f"{'trial':<14}{'wall s':>8}{'in-trial':>10}{'setup':>8}{'report':>8}{'train':>8}"
        f"{'overhead':>10}  actor"
    )
    print(
        f"\nsweep: {len(rows)} trials x {args.epochs} epochs x {args.steps} steps, "
        f"{args.concurrency} at a time, in {sweep_seconds:.1f} s (Ray start and data included)"
    )
    print(header)
    for row in rows:
        print(
            f"{row['trial']:<14}{row['wall']:>8.2f}{row['in_trial']:>10.2f}{row['setup']:>8.2f}"
            f"{row['report']:>8.2f}{row['train']:>8.2f}{row['overhead']:>10.2f}  "
            + ("new process" if row["cold"] else "reused")
        )
    groups = [("all trials", rows)]
    groups += [(label, g) for label, g in (
        ("trials in a new process", [r for r in rows if r["cold"]]),
        ("trials in a reused process", [r for r in rows if not r["cold"]]),
    ) if g]  # fmt: skip
    for label, group in groups:
        wall = statistics.fmean(r["wall"] for r in group)
        train = statistics.fmean(r["train"] for r in group)
        print(
            f"mean over {label}: wall {wall:.2f} s, training {train:.2f} s, overhead "
            f"{wall - train:.2f} s per trial ({(wall - train) / args.epochs:.2f} s per epoch; "
            f"setup {statistics.fmean(r['setup'] for r in group):.2f} s, reporting "
            f"{statistics.fmean(r['report'] for r in group) / args.epochs:.3f} s per epoch)"
        )
    print(f"outputs: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
