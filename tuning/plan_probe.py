"""`sweep.py --plan --probe`: times a few training steps of the space's base config in this
process, on the device its trials would use, with random inputs of the model-input shape (no
dataset read for them, no checkpoint loaded, nothing written), and turns the step time into the
plan's per-epoch figure. Follows benchmarks/train_throughput.py (the same TrainStep).
"""

from __future__ import annotations

import time

import torch

from lungsrad.config import ExperimentConfig, apply_overrides, expected_num_frames
from lungsrad.training.loop import EpochTotals, draw_epoch_randomness, steps_per_epoch
from lungsrad.training.runtime import cpu_threads
from lungsrad.training.setup import build_training_parts
from lungsrad.training.train_step import EpochData
from tuning.plan_ledger import Estimate, training_cycles
from tuning.search_space import SearchSpace

WARMUP_STEPS = {"cpu": 1, "cuda": 3}  # untimed: first-call allocations, kernel selection
TIMED_STEPS = 3


def probe_device(config: ExperimentConfig, device: str) -> torch.device:
    """The device a trial of `config` holding a `device` (GPU / CPU) reservation trains on."""
    if device == "GPU" and config.train.device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def time_training_step(config: ExperimentConfig, device: torch.device) -> float:
    """Mean seconds of one optimiser step (the run's TrainStep, eager) on a batch of random
    (batch, frames, mel_bins) fbanks, after WARMUP_STEPS untimed steps."""
    config = apply_overrides(config, {"model.checkpoint": None, "train.capture_step": False})
    train = config.train
    with cpu_threads(train.num_threads if device.type == "cpu" else None):
        parts = build_training_parts(config, device, load_initial_checkpoint=False)
        generator = torch.Generator().manual_seed(0)
        shape = (train.batch_size, expected_num_frames(config.data), config.data.num_mel_bins)
        data = EpochData(
            features=torch.randn(*shape, generator=generator).half().to(device),
            labels=torch.randint(0, config.model.num_classes, shape[:1], generator=generator).to(
                device
            ),
            train_indices=torch.arange(shape[0], device=device),
        )
        step = parts.train_step(data, capture=False)
        warmup = WARMUP_STEPS[device.type]
        randomness = draw_epoch_randomness(
            seed=0,
            epoch=1,
            num_steps=warmup + TIMED_STEPS,
            batch_size=train.batch_size,
            specaugment=step.specaugment,
            mixes=step.objective.mixes,
            alpha=step.objective.config.alpha,
            cells=step.cells,
            device=device,
        )
        totals = EpochTotals(device)
        started = 0.0
        for index in range(warmup + TIMED_STEPS):
            if index == warmup:
                _synchronize(device)
                started = time.perf_counter()
            totals.add(step(data.train_indices, randomness[index], epoch=1, step=index + 1), 1)
        _synchronize(device)
        seconds = (time.perf_counter() - started) / TIMED_STEPS
        totals.raise_if_not_finite(epoch=1)
    return seconds


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe_estimate(space: SearchSpace, *, device: str, units: float) -> tuple[Estimate | None, str]:
    """The plan's estimate from a probe of the base config's training step: seconds per epoch
    = steps per epoch x step time (evaluation, data loading and trial set-up not included);
    None and why when the steps per epoch are not known."""
    config = space.base_config
    torch_device = probe_device(config, device)
    seconds = time_training_step(config, torch_device)
    cycles = training_cycles(config)
    if cycles is not None:
        steps = steps_per_epoch(cycles, config.train)
        where = f"{cycles} training cycles in {config.data.root}"
    elif config.train.max_steps_per_epoch is not None:
        steps = config.train.max_steps_per_epoch
        where = "train.max_steps_per_epoch: the data folder is not there yet"
    else:
        return None, (
            f"the probe took {seconds:.4f} s per training step on {torch_device}, but the steps "
            f"per epoch are unknown: the data folder {config.data.root} is not there yet (give "
            "--data, or set train.max_steps_per_epoch)"
        )
    basis = (
        f"probe: {seconds:.4f} s per training step on {torch_device} (batch "
        f"{config.train.batch_size}, {TIMED_STEPS} steps timed after "
        f"{WARMUP_STEPS[torch_device.type]}) x {steps} steps per epoch ({where}); evaluation and "
        "trial set-up not included"
    )
    if space.has_variants:
        basis += f"; the first variant's config ('{next(iter(space.variants))}')"
    if device == "GPU" and torch_device.type == "cpu":
        basis += (
            "; the trials hold GPUs but this machine has no CUDA device (or train.device is cpu): "
            "a CPU step, far slower than theirs"
        )
    estimate = Estimate(
        basis=basis,
        seconds_per_trial_epoch=seconds * steps,
        device=device,
        units=units,
        startup_seconds=0.0,
    )
    return estimate, ""
