"""Soak of the sweep platform: N trials (default 500) of a tiny DASS on synthetic data with ASHA on
a local Ray, through the real driver (tuning.driver.run_sweep: Tune, the MLflow callbacks and run
writer, the exports), against a SQLite store or a `mlflow server` on PostgreSQL started here.

    python benchmarks/sweep_soak.py [--trials 500] [--store sqlite|postgres] [--json]

Every 50 finished trials it records: driver RSS, MLflow store size and row counts, Optuna storage
size (none today: the TPE study lives in the driver's memory), sweep-folder size, per-trial
overhead (driver wall time from start to end of a trial minus the trial's own time, Tune's
time_total_s: training, evaluation, its setup and reports) and the driver's time to log one
result (MlflowLogger.on_trial_result, timed in place: wall and CPU), and the driver process's
CPU seconds per trial (all its threads: Tune's state saves and syncs included; on a loaded
machine the wall figures follow the load, the CPU ones much less). It prints them side by side,
the growth per 100 trials of each (least-squares slope over the samples) and a verdict against
the targets:
RSS grows < 50 MB per 100 trials, the last window's overhead within 20 % of the first's, every
trial finished with its metrics. `--json` ends the output with one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from ray import tune  # noqa: E402

from mlflow_tracking.postgres import LocalPostgres  # noqa: E402
from mlflow_tracking.server import LocalTrackingServer  # noqa: E402
from mlflow_tracking.store import make_client  # noqa: E402
from mlflow_tracking.sweep_runs import sweep_child_runs  # noqa: E402
from mlflow_tracking.tags import TAG_TRIAL_ID  # noqa: E402
from mlflow_tracking.uri import sqlite_uri  # noqa: E402
from tuning.callbacks import MlflowLogger  # noqa: E402
from tuning.driver import run_sweep  # noqa: E402
from tuning.search_space import load_search_space  # noqa: E402
from tuning.settings import DriverSettings  # noqa: E402

EXPERIMENT = "sweep-soak"
# MLflow's tables that grow with runs (row counts recorded).
COUNTED_TABLES = ("runs", "metrics", "latest_metrics", "params", "tags")
RSS_TARGET_MB_PER_100 = 50.0
OVERHEAD_TARGET = 0.20


def write_space(folder: Path, *, trials: int, data: Path, search: str, concurrency: int) -> Path:
    """A TPE (or grid) space of `trials` tiny trials, 3 epochs of one step, ASHA from epoch 1."""
    base = {
        "name": "soak",
        "data": {"root": str(data), "segment_seconds": 1.0, "num_mel_bins": 32},
        "model": {
            "preset": "custom", "dims": [8, 16], "depths": [1, 1],
            "drop_path_rate": 0.0, "scan_backend": "chunked",
        },
        "method": {
            "regularization": {"enabled": True, "stage": 1, "blocks": "all"},
            "patch_mix": {"mode": "dual", "projection_dim": 16},
        },
        "train": {
            "num_epochs": 3, "batch_size": 8, "eval_batch_size": 64, "learning_rate": 1.0e-3,
            "time_mask": 10, "freq_mask": 8, "max_steps_per_epoch": 1, "num_threads": 1,
        },
    }  # fmt: skip
    if search == "grid":
        parameters: dict[str, Any] = {
            "method.patch_mix.alpha": {"grid": [round(0.1 + 0.01 * i, 4) for i in range(trials)]}
        }
    else:
        parameters = {
            "method.patch_mix.alpha": {"loguniform": [0.1, 10.0]},
            "method.patch_mix.temperature": {"loguniform": [0.03, 0.3]},
        }
    document = {
        "name": "soak",
        "base_overrides": base,
        "parameters": parameters,
        "search": search,
        **({"num_samples": trials} if search == "tpe" else {}),
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2, "max_t": 3},
        "resources": {"cpu": 1},
        "max_concurrent_trials": concurrency,
        "max_failures": 0,
        "seeds": [0],
    }
    path = folder / "soak.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class Sample:
    """What the soak records after every `every` finished trials."""

    trials: int
    rss_mb: float
    store_mb: float
    rows: dict[str, int]
    optuna_mb: float | None
    folder_mb: float
    overhead_s: float  # mean over the trials finished since the previous sample
    log_ms: float  # mean driver time to log one result, since the previous sample
    log_cpu_ms: float  # the same in the driver thread's CPU time (less sensitive to load)
    driver_cpu_s: float  # driver process CPU seconds (all threads) per trial, in the window


def rss_mb() -> float:
    """Resident memory of this process (the driver)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total / 2**20


class Store:
    """The MLflow store of the soak: its tracking URI, size and row counts."""

    def __init__(self, kind: str, root: Path):
        self.kind = kind
        self.postgres: LocalPostgres | None = None
        self.server: LocalTrackingServer | None = None
        if kind == "postgres":
            self.postgres = LocalPostgres().start()
            backend = self.postgres.create_database("mlflow")
            self.server = LocalTrackingServer(root / "mlflow_server", backend_store_uri=backend)
            self.server.start()
            self.uri = self.server.uri
        else:
            self.database = root / "mlflow.db"
            self.uri = sqlite_uri(self.database)

    def size_mb(self) -> float:
        if self.postgres is not None:
            return self.postgres.database_bytes("mlflow") / 2**20
        files = [self.database.with_name(self.database.name + s) for s in ("", "-wal", "-journal")]
        return sum(f.stat().st_size for f in files if f.is_file()) / 2**20

    def rows(self) -> dict[str, int]:
        if self.postgres is not None:
            return self.postgres.count_rows("mlflow", COUNTED_TABLES)
        with contextlib.closing(sqlite3.connect(f"file:{self.database}?mode=ro", uri=True)) as db:
            return {
                t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in COUNTED_TABLES
            }

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.postgres is not None:
            self.postgres.close()


class SoakProbe(tune.Callback):
    """Driver-side clock of each trial, and a sample every `every` finished trials."""

    def __init__(
        self, *, every: int, store: Store, storage: Path, log_times: list[tuple[float, float]]
    ):
        self.every = every
        self.store = store
        self.storage = storage
        self.log_times = log_times  # (wall, CPU) seconds of each MlflowLogger.on_trial_result
        self.started: dict[str, float] = {}
        self.overheads: list[float] = []
        self.samples: list[Sample] = []
        self._logged_at_sample = 0
        self._cpu_at_sample = time.process_time()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state: not the store's server process.
        state = dict(self.__dict__)
        state["store"] = None
        return state

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started.setdefault(trial.trial_id, time.monotonic())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def _ended(self, trial: Any) -> None:
        wall = time.monotonic() - self.started.pop(trial.trial_id, time.monotonic())
        own = float((trial.last_result or {}).get("time_total_s", float("nan")))
        self.overheads.append(wall - own)
        if len(self.overheads) % self.every == 0:
            self.sample()

    def sample(self) -> None:
        window = self.overheads[len(self.overheads) - self.every :]
        logs = self.log_times[self._logged_at_sample :]
        self._logged_at_sample = len(self.log_times)
        cpu, self._cpu_at_sample = time.process_time() - self._cpu_at_sample, time.process_time()
        sample = Sample(
            trials=len(self.overheads),
            rss_mb=rss_mb(),
            store_mb=self.store.size_mb(),
            rows=self.store.rows(),
            optuna_mb=None,
            folder_mb=folder_mb(self.storage),
            overhead_s=statistics.fmean(window) if window else float("nan"),
            log_ms=1000 * statistics.fmean(wall for wall, _ in logs) if logs else float("nan"),
            log_cpu_ms=1000 * statistics.fmean(cpu for _, cpu in logs) if logs else float("nan"),
            driver_cpu_s=cpu / max(1, len(window)),
        )
        self.samples.append(sample)
        print(_row(sample), file=sys.__stdout__, flush=True)


def time_result_logging(log_times: list[tuple[float, float]]) -> None:
    """Times MlflowLogger.on_trial_result in place (the real callback still does the work): wall
    and driver-thread CPU seconds of each call."""
    original = MlflowLogger.on_trial_result

    def timed(self: MlflowLogger, *args: Any, **kwargs: Any) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            original(self, *args, **kwargs)
        finally:
            log_times.append((time.perf_counter() - started, time.thread_time() - cpu))

    MlflowLogger.on_trial_result = timed  # type: ignore[method-assign]


_HEADER = (
    f"{'trials':>6} {'RSS MB':>8} {'store MB':>9} {'runs':>6} {'metrics':>8} {'params':>7} "
    f"{'tags':>7} {'optuna MB':>9} {'folder MB':>9} {'overhead s':>10} {'log ms':>7} "
    f"{'log CPU ms':>10} {'driver CPU s':>12}"
)


def _row(sample: Sample) -> str:
    rows = sample.rows
    optuna = "-" if sample.optuna_mb is None else f"{sample.optuna_mb:.1f}"
    return (
        f"{sample.trials:>6} {sample.rss_mb:>8.1f} {sample.store_mb:>9.2f} {rows['runs']:>6} "
        f"{rows['metrics']:>8} {rows['params']:>7} {rows['tags']:>7} {optuna:>9} "
        f"{sample.folder_mb:>9.1f} {sample.overhead_s:>10.2f} {sample.log_ms:>7.1f} "
        f"{sample.log_cpu_ms:>10.1f} {sample.driver_cpu_s:>12.2f}"
    )


def slope_per_100(samples: list[Sample], value: Any) -> float:
    """Least-squares growth of value(sample) per 100 trials (nan with fewer than 2 samples)."""
    points = [(s.trials, value(s)) for s in samples]
    if len(points) < 2:
        return float("nan")
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return 100 * sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def growth(samples: list[Sample]) -> dict[str, float]:
    figures = {
        "rss_mb": lambda s: s.rss_mb,
        "store_mb": lambda s: s.store_mb,
        "folder_mb": lambda s: s.folder_mb,
        "overhead_s": lambda s: s.overhead_s,
        "log_ms": lambda s: s.log_ms,
        "log_cpu_ms": lambda s: s.log_cpu_ms,
        "driver_cpu_s": lambda s: s.driver_cpu_s,
        **{f"{table}_rows": (lambda s, t=table: s.rows[t]) for table in COUNTED_TABLES},
    }
    return {name: slope_per_100(samples, value) for name, value in figures.items()}


def count_completed(uri: str, parent_run_id: str) -> tuple[int, int, int]:
    """(child runs, distinct trial ids, FINISHED runs with their epoch metric) of the sweep."""
    client = make_client(uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = sweep_child_runs(client, experiment_id, parent_run_id)
    completed = [r for r in runs if r.info.status == "FINISHED" and "epoch" in r.data.metrics]
    trial_ids = {r.data.tags.get(TAG_TRIAL_ID) for r in runs}
    return len(runs), len(trial_ids), len(completed)


def verdict(samples: list[Sample], rates: dict[str, float], trials: int, completed: int) -> dict:
    first, last = samples[0].overhead_s, samples[-1].overhead_s
    change = (last - first) / first if first > 0 else float("nan")
    return {
        "rss_ok": bool(rates["rss_mb"] < RSS_TARGET_MB_PER_100),
        "overhead_change": change,
        "overhead_ok": bool(abs(change) <= OVERHEAD_TARGET),
        "all_completed": completed == trials,
    }


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--every", type=int, default=50, help="trials between samples")
    parser.add_argument("--search", choices=["tpe", "grid"], default="tpe")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time")
    parser.add_argument("--output-root", type=Path, default=None, help="default: a temp folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    root = (args.output_root or Path(tempfile.mkdtemp(prefix="sweep_soak_"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    from lungsrad.data.synthetic import write_synthetic_dataset

    data = root / "synthetic_data"
    if not data.exists():
        write_synthetic_dataset(data, num_recordings=10, seed=0)
    space = load_search_space(
        write_space(
            root, trials=args.trials, data=data, search=args.search, concurrency=args.concurrency
        )
    )
    store = Store(args.store, root)
    log_times: list[tuple[float, float]] = []
    time_result_logging(log_times)
    settings = DriverSettings(
        output_root=root,
        storage_path=root / "ray_results",
        tracking_uri=store.uri,
        experiment=EXPERIMENT,
        ray_address=None,
    )
    probe = SoakProbe(every=args.every, store=store, storage=settings.storage_path,
                      log_times=log_times)  # fmt: skip
    print(f"soak: {args.trials} trials, store {args.store} ({store.uri}), outputs {root}")
    print(_HEADER, flush=True)
    started = time.monotonic()
    try:
        with open(root / "sweep.log", "a") as log, contextlib.redirect_stdout(log):
            outcome = run_sweep(space, settings, callbacks=[probe], num_cpus=args.concurrency)
        if len(probe.overheads) % args.every:
            probe.sample()
        runs, trial_ids, completed = count_completed(store.uri, outcome.parent_run_id)
    finally:
        store.close()
    seconds = time.monotonic() - started
    rates = growth(probe.samples)
    result = verdict(probe.samples, rates, args.trials, completed)
    print(f"\n{args.trials} trials in {seconds:.0f} s on {args.store}: {runs} child runs, "
          f"{trial_ids} distinct trial ids, {completed} finished with their metrics")  # fmt: skip
    print("growth per 100 trials: " + ", ".join(f"{k} {v:+.3g}" for k, v in rates.items()))
    print(
        f"verdict: driver RSS {rates['rss_mb']:+.1f} MB/100 trials "
        f"({'ok' if result['rss_ok'] else 'MISSES'} < {RSS_TARGET_MB_PER_100:.0f}); overhead "
        f"{result['overhead_change']:+.0%} from the first window "
        f"({'ok' if result['overhead_ok'] else 'MISSES'} within {OVERHEAD_TARGET:.0%}); "
        f"{completed}/{args.trials} complete ({'ok' if result['all_completed'] else 'MISSES'})"
    )
    if args.json:
        print(json.dumps({
            "store": args.store, "trials": args.trials, "completed": completed,
            "child_runs": runs, "distinct_trials": trial_ids, "seconds": seconds,
            "growth_per_100": rates, **result,
            "samples": [asdict(sample) for sample in probe.samples],
        }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
