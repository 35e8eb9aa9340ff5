"""What an earlier sweep of the same model cost, for `sweep.py --plan`: finds the newest finished
sweep folder under the storage path whose model key matches, and reads its cost ledger
(tuning.cost), its summary's wall time and its trials' training-set size. Reads only.

The model key (`model_key`) is what sets the cost of one training step: the model section
without its checkpoint file and drop-path rate (backbone, preset or custom dims and depths, AST
size, scan backend, classes), the input the model sees (model_input_frames x num_mel_bins),
train.batch_size, train.amp, and the device kind that counts the cost (GPU or CPU). An earlier
sweep's key is read from its best_config.yaml (the chosen configuration; a sweep that sweeps a
key field itself is described by its winner) and its ledger's device.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.config import ExperimentConfig, load_config, model_input_frames
from tuning.cost import COST_FOLDER, load_costs, summary_wall_seconds
from tuning.result_keys import FACTS_KEY
from tuning.results import BEST_CONFIG_FILE, SUMMARY_FILE
from tuning.search_space import SearchSpace
from tuning.sweep_folder import STATE_FILE, read_state

_NOT_COST_FIELDS = ("checkpoint", "drop_path_rate")


def model_key(config: ExperimentConfig, device: str) -> dict[str, Any]:
    """The fields that set a training step's cost (module docstring); `device` is GPU or CPU."""
    model = {
        name: value
        for name, value in dataclasses.asdict(config.model).items()
        if name not in _NOT_COST_FIELDS
    }
    return {
        "model": model,
        "input": [model_input_frames(config.data), config.data.num_mel_bins],
        "batch_size": config.train.batch_size,
        "amp": config.train.amp,
        "device": device,
    }


def describe_key(key: dict[str, Any]) -> str:
    """The key on one line, e.g. "dass custom dims [8, 16] depths [1, 1], 98 x 32 input,
    batch 8, CPU"."""
    model = key["model"]
    if model.get("preset") == "custom":
        shape = f"custom dims {list(model['dims'])} depths {list(model['depths'])}"
    else:
        shape = str(model.get("ast_size") if model["backbone"] == "ast" else model["preset"])
    frames, mel_bins = key["input"]
    return (
        f"{model['backbone']} {shape}, {frames} x {mel_bins} input, batch {key['batch_size']}, "
        f"amp {key['amp']}, {key['device']}"
    )


@dataclass(frozen=True)
class EarlierSweep:
    """The measured cost of an earlier sweep of the same model."""

    folder: Path
    config: ExperimentConfig  # its best_config.yaml
    trials: int  # trials in its ledger
    epochs_run: int  # epochs all its trials ran
    trial_wall_seconds: float  # wall time all its trials held their resources
    units: float  # GPUs (or CPUs) a trial held
    device: str  # GPU | CPU
    wall_seconds: float | None  # its summary's sweep wall time
    busy_seconds: float  # wall time while at least one trial ran (union of the attempts)
    num_train: int | None  # training cycles a trial of it saw

    @property
    def seconds_per_trial_epoch(self) -> float:
        """Wall seconds one trial spent per epoch it ran (set-up and evaluation included)."""
        return self.trial_wall_seconds / self.epochs_run

    @property
    def startup_seconds(self) -> float:
        """The sweep's wall time while no trial ran (Ray's start, MLflow, data, gaps between
        trials, the export); 0 when its summary states no wall time."""
        if self.wall_seconds is None:
            return 0.0
        return max(0.0, self.wall_seconds - self.busy_seconds)


def find_earlier_sweep(storage_path: Path, key: dict[str, Any]) -> EarlierSweep | None:
    """The newest finished sweep under `storage_path` (its folders with a sweep.json, a cost
    ledger and a best_config.yaml) whose model key is `key`; None when there is none."""
    folders = (
        [p.parent for p in storage_path.glob(f"*/{STATE_FILE}")] if storage_path.is_dir() else []
    )
    for folder in sorted(folders, key=lambda p: (p / STATE_FILE).stat().st_mtime, reverse=True):
        earlier = read_earlier_sweep(folder)
        if earlier is not None and model_key(earlier.config, earlier.device) == key:
            return earlier
    return None


def read_earlier_sweep(folder: Path) -> EarlierSweep | None:
    """A finished sweep folder's measured cost; None when it has no ledger with epochs or no
    best_config.yaml (an unfinished or failed sweep)."""
    costs = [c for c in load_costs(folder / COST_FOLDER).values() if c.epochs_run > 0]
    best = folder / BEST_CONFIG_FILE
    if not costs or not best.is_file() or not read_state(folder):
        return None
    try:
        config = load_config(best)
    except (ValueError, OSError):  # written by another version, or its files moved
        return None
    intervals = [interval for cost in costs for interval in cost.intervals]
    summary = folder / SUMMARY_FILE
    return EarlierSweep(
        folder=folder,
        config=config,
        trials=len(costs),
        epochs_run=sum(c.epochs_run for c in costs),
        trial_wall_seconds=sum(c.wall_seconds for c in costs),
        units=costs[0].units,
        device=costs[0].device,
        wall_seconds=(
            summary_wall_seconds(summary.read_text(encoding="utf-8")) if summary.is_file() else None
        ),
        busy_seconds=_union_seconds(intervals),
        num_train=_num_train(folder),
    )


def training_cycles(config: ExperimentConfig) -> int | None:
    """Cycles of the official training split in the config's data folder (annotations read,
    audio not); None when the folder is not there yet (the synthetic data a sweep generates)."""
    from lungsrad.data.icbhi import scan_dataset

    root = config.data.root
    if root is None or not Path(root).is_dir():
        return None
    scan = scan_dataset(root, config.data.split_file, read_headers=False)
    return sum(len(r.cycles) for r in scan.recordings if r.split == "train")


def _union_seconds(intervals: list[list[float]]) -> float:
    """Length of the union of [start, end] intervals."""
    total, reached = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def _num_train(folder: Path) -> int | None:
    """Training cycles a trial saw: split_sizes of the facts in a trial's first result."""
    for result in sorted(folder.glob("trial_*/result.json")):
        with result.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    facts = json.loads(json.loads(line).get(FACTS_KEY) or "{}")
                except (json.JSONDecodeError, AttributeError):
                    break
                train = facts.get("split_sizes", {}).get("train")
                if train:
                    return int(train)
    return None


@dataclass(frozen=True)
class Estimate:
    """Device time and wall time of the sweep, at most and at least."""

    basis: str  # where the per-epoch figure comes from
    seconds_per_trial_epoch: float  # wall seconds one trial spends per epoch
    device: str  # GPU | CPU
    units: float  # GPUs (CPUs) a trial holds
    startup_seconds: float  # the sweep's wall time with no trial running (0: not known)

    def device_seconds(self, epochs: int) -> float:
        return epochs * self.seconds_per_trial_epoch * self.units

    def wall_seconds(self, epochs: int, *, concurrent: int, full_epochs: int) -> float:
        """Start-up, then `epochs` trial-epochs spread over `concurrent` slots (never less than
        one full-length trial)."""
        spread = max(epochs / max(concurrent, 1), full_epochs)
        return self.startup_seconds + spread * self.seconds_per_trial_epoch


def ledger_estimate(space: SearchSpace, earlier: EarlierSweep) -> Estimate:
    """The earlier sweep's wall seconds per trial-epoch, scaled by steps per epoch (this space's
    train settings over its, on its training-set size)."""
    from lungsrad.training.loop import steps_per_epoch

    per_epoch = earlier.seconds_per_trial_epoch
    basis = (
        f"earlier sweep {earlier.folder.name} ({earlier.folder}): {earlier.trials} trials, "
        f"{earlier.epochs_run} epochs, {earlier.trial_wall_seconds:.1f} s of trial time "
        f"= {per_epoch:.2f} s per trial-epoch"
    )
    if earlier.num_train:
        cycles = training_cycles(space.base_config)
        before = steps_per_epoch(earlier.num_train, earlier.config.train)
        now = steps_per_epoch(cycles or earlier.num_train, space.base_config.train)
        if now != before:
            per_epoch *= now / before
            basis += f", x {now}/{before} steps per epoch"
        basis += (
            f" ({cycles} training cycles here, {earlier.num_train} there)"
            if cycles
            else f" (assumes its {earlier.num_train} training cycles: no data folder here yet)"
        )
    if earlier.wall_seconds is not None:
        basis += (
            f"; its wall time with no trial running (start-up, gaps, export) "
            f"{earlier.startup_seconds:.0f} s"
        )
    return Estimate(
        basis=basis,
        seconds_per_trial_epoch=per_epoch,
        device=earlier.device,
        units=earlier.units,
        startup_seconds=earlier.startup_seconds,
    )
