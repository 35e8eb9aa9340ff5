"""CPU epoch times of the two tiny configs side by side: configs/synthetic_tiny.yaml (tiny DASS,
full Lung-SRAD method) and configs/synthetic_tiny_ast.yaml (tiny AST, patch-mix CL).

Both train on the same synthetic dataset (60 recordings by default, as in the configs' headers)
with their own settings (one CPU thread each); the runs alternate, round by round, so a change in
the machine's load hits both. An epoch is the wall time between two epoch ends (training, the
per-epoch evaluation and the checkpoint), the first epoch excluded (warm-up). Prints per config
the median seconds per epoch, training samples/s, and the ratio.

    python benchmarks/tiny_epochs_cpu.py [--epochs 6] [--rounds 2] [--recordings 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lungsrad.config import apply_overrides, load_config
from lungsrad.data.features import build_feature_set
from lungsrad.data.synthetic import write_synthetic_dataset
from lungsrad.metrics import TRAIN_SAMPLES_PER_SECOND
from lungsrad.training.run import TrainingCallback, run_experiment

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "tiny DASS": ROOT / "configs" / "synthetic_tiny.yaml",
    "tiny AST": ROOT / "configs" / "synthetic_tiny_ast.yaml",
}


class EpochClock(TrainingCallback):
    """Wall time between consecutive epoch ends, and each epoch's training samples/s."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.seconds: list[float] = []
        self.samples_per_second: list[float] = []

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self.last)
        self.samples_per_second.append(metrics[TRAIN_SAMPLES_PER_SECOND])
        self.last = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (first untimed)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per config")
    parser.add_argument("--recordings", type=int, default=60)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work_dir or Path(scratch)
        data = work / "data"
        if not (data / "ICBHI_challenge_train_test.txt").is_file():
            write_synthetic_dataset(data, num_recordings=args.recordings, seed=0)
        configs, features = {}, {}
        for name, path in CONFIGS.items():
            config = apply_overrides(
                load_config(path),
                {
                    "data.root": str(data),
                    "data.cache_dir": str(work / "cache"),
                    "train.num_epochs": args.epochs,
                    "train.device": "cpu",
                },
            )
            configs[name] = config
            features[name] = build_feature_set(config.data, config.data.root, show_progress=False)
        print(
            f"tiny configs on CPU ({os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} at start); torch {torch.__version__}; "
            f"{len(features['tiny AST'].labels)} cycles; {args.epochs} epochs x {args.rounds} "
            "rounds each, first epoch of a run untimed"
        )
        clocks = {name: EpochClock() for name in configs}
        for round_index in range(args.rounds):
            for name, config in configs.items():
                clock = EpochClock()
                run_experiment(
                    config,
                    output_dir=work / f"run_{name.replace(' ', '_')}_{round_index}",
                    feature_set=features[name],
                    callbacks=[clock],
                    resume=False,
                    show_progress=False,
                )
                clocks[name].seconds += clock.seconds[1:]
                clocks[name].samples_per_second += clock.samples_per_second[1:]
        medians = {}
        for name, clock in clocks.items():
            medians[name] = statistics.median(clock.seconds)
            config = configs[name]
            print(
                f"{name:<10} ({CONFIGS[name].name}, batch {config.train.batch_size}, "
                f"{config.train.num_threads} thread): median {medians[name]:.2f} s/epoch over "
                f"{len(clock.seconds)} epochs (min {min(clock.seconds):.2f}, max "
                f"{max(clock.seconds):.2f}); training "
                f"{statistics.median(clock.samples_per_second):.0f} samples/s"
            )
        print(
            f"tiny AST / tiny DASS epoch time: {medians['tiny AST'] / medians['tiny DASS']:.2f}; "
            f"load average at the end {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
