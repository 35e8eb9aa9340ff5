"""`python tuning/sweep.py --space S --plan [--probe]`: what a sweep will run and cost, printed
before anything starts. Starts no Ray (and imports none), opens no MLflow store, writes nothing.

Counts come from the space itself (SearchSpace.num_trials, plus the `reseed` trials); the
trials that run at once from the resources per trial and the cluster RAY_ADDRESS names (read
through its dashboard's HTTP state API) or this machine; epochs at most and, under ASHA, at
least (`asha_min_epochs`); device time and wall time from the cost ledger of an earlier sweep of
the same model (tuning.plan_ledger) or from a measured probe of training steps
(tuning.plan_probe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuning.plan_capacity import read_capacity
from tuning.plan_ledger import (
    Estimate,
    describe_key,
    find_earlier_sweep,
    ledger_estimate,
    model_key,
)
from tuning.search_space import SearchSpace
from tuning.settings import DriverSettings


@dataclass(frozen=True)
class TrialCounts:
    """What the sweep runs."""

    configurations: int  # distinct configurations of the search (seeds not counted)
    search_trials: int  # trials of the search (configurations x seeds; ASHA applies)
    reseed_trials: int  # trials of the `reseed` step (full length)
    how: str  # how the search trials come about, for the console

    @property
    def trials(self) -> int:
        """Every trial."""
        return self.search_trials + self.reseed_trials


def count_trials(space: SearchSpace) -> TrialCounts:
    """The configurations and trials of `space` (seeds, variants and reseed included)."""
    search_trials = space.num_trials()
    assert search_trials is not None
    seeds, variants = len(space.seeds), len(space.variants)
    variant_text = f" x {variants} variants" if variants > 1 else ""
    if space.search == "tpe":
        configurations = search_trials
        how = f"TPE, num_samples {space.num_samples}{variant_text and ' (variant sampled)'}"
    elif space.search == "one_at_a_time":
        points = len(space.points())
        configurations = points * variants
        how = f"one_at_a_time: the base point + {points - 1} single changes{variant_text}"
    else:
        configurations = search_trials // seeds
        grid = math.prod(len(p.values) for p in space.parameters if p.is_discrete)
        how = f"grid of {grid} x num_samples {space.num_samples}{variant_text}"
    reseed = space.reseed.top_k * len(space.reseed.seeds) if space.reseed else 0
    return TrialCounts(configurations, search_trials, reseed, how)


def trial_epochs(space: SearchSpace) -> int:
    """Epochs of one full-length trial: the longest base config's, capped by ASHA's max_t."""
    if space.scheduler.kind == "asha" and space.scheduler.max_t is not None:
        return min(space.scheduler.max_t, space.max_epochs)
    return space.max_epochs


def asha_rungs(space: SearchSpace) -> list[int]:
    """The epochs at which ASHA compares trials (grace_period x reduction_factor^k below the
    full length), as Ray's ASHAScheduler places them with one bracket."""
    scheduler = space.scheduler
    full = trial_epochs(space)
    rungs, rung = [], float(scheduler.grace_period)
    while rung < full:
        rungs.append(int(rung))
        rung *= scheduler.reduction_factor
    return rungs


def asha_min_epochs(trials: int, *, grace_period: int, full_epochs: int) -> int:
    """The fewest epochs `trials` search trials can run under ASHA.

    Ray's ASHA lets a trial go on when no trial has reached its rung yet (no cutoff exists), so
    the first trial at every rung is promoted: at least one trial runs its full length, and at
    best every other trial stops at the first rung (grace_period). Hence

        min_epochs = (trials - 1) x min(grace_period, full_epochs) + full_epochs

    (trials x full_epochs when there is no rung below the full length).
    """
    if trials <= 0:
        return 0
    return (trials - 1) * min(grace_period, full_epochs) + full_epochs


@dataclass(frozen=True)
class EpochBounds:
    most: int
    least: int


def epoch_bounds(space: SearchSpace, counts: TrialCounts) -> EpochBounds:
    """Epochs of all trials at most (all full length) and at least (ASHA's fewest; reseed
    trials run in full)."""
    full = trial_epochs(space)
    most = counts.trials * full
    if space.scheduler.kind != "asha" or not asha_rungs(space):
        return EpochBounds(most, most)
    least = asha_min_epochs(
        counts.search_trials, grace_period=space.scheduler.grace_period, full_epochs=full
    )
    return EpochBounds(most, least + counts.reseed_trials * full)


def plan_lines(space: SearchSpace, settings: DriverSettings, *, probe: bool) -> list[str]:
    """The plan of `space` as printed lines."""
    counts = count_trials(space)
    capacity = read_capacity(settings.ray_address, space.resources)
    concurrent = capacity.concurrent(space.resources, space.max_concurrent_trials)
    bounds = epoch_bounds(space, counts)
    full = trial_epochs(space)
    lines = [
        f"plan of sweep '{space.name}' ({space.path}); nothing was started or written",
        f"  configurations: {counts.configurations} ({counts.how})",
        f"  trials: {counts.search_trials} = {counts.configurations} configurations x "
        f"{len(space.seeds)} seed(s)"
        + (f", + {counts.reseed_trials} reseed trials" if counts.reseed_trials else ""),
        f"  per trial: {_resources_text(space)}; {capacity.describe()}: {concurrent} at once"
        + ("" if concurrent else " (no node holds one trial: the sweep would refuse to start)")
        + (
            f" (max_concurrent_trials {space.max_concurrent_trials})"
            if space.max_concurrent_trials
            else ""
        ),
        *_epoch_lines(space, counts, bounds, full),
    ]
    estimate, missing = _estimate(space, settings, probe=probe)
    if estimate is None:
        return [*lines, f"  estimate: none; {missing}"]
    return [*lines, *_estimate_lines(estimate, bounds, concurrent=concurrent, full=full)]


def _resources_text(space: SearchSpace) -> str:
    resources = space.resources
    text = f"{resources.cpu:g} CPU(s), {resources.gpu:g} GPU(s)"
    return text + "".join(f", {amount:g} '{name}'" for name, amount in resources.custom.items())


def _epoch_lines(
    space: SearchSpace, counts: TrialCounts, bounds: EpochBounds, full: int
) -> list[str]:
    most = f"  epochs at most: {bounds.most} = {counts.trials} trials x {full} epochs"
    if bounds.least == bounds.most:
        return [most + " (no early stopping: also the least)"]
    scheduler = space.scheduler
    return [
        most,
        f"  epochs at least: {bounds.least} (ASHA, grace_period {scheduler.grace_period}, "
        f"reduction_factor {scheduler.reduction_factor:g}, max_t {full}, rungs at epochs "
        f"{asha_rungs(space)}: every search trial but one stopped at the first rung"
        + (", reseed trials in full" if counts.reseed_trials else "")
        + ")",
    ]


def _estimate(
    space: SearchSpace, settings: DriverSettings, *, probe: bool
) -> tuple[Estimate | None, str]:
    """The estimate (from the probe when asked, else an earlier sweep of the same model), or
    None and what to do to get one."""
    from tuning.cost import resource_units

    device, units = resource_units(space.resources.as_dict())
    keys = {
        describe_key(model_key(c, device)): model_key(c, device) for c in space.variants.values()
    }
    if probe:
        from tuning.plan_probe import probe_estimate

        return probe_estimate(space, device=device, units=units)
    if len(keys) > 1:
        return None, (
            f"the variants differ in model ({'; '.join(keys)}): time one with --plan --probe on a "
            "space of that variant"
        )
    ((described, key),) = keys.items()
    earlier = find_earlier_sweep(settings.storage_path, key)
    if earlier is None:
        return None, (
            f"no finished sweep of this model ({described}) under {settings.storage_path}; add "
            "--probe to time a few training steps here, or run a short sweep of this model first"
        )
    return ledger_estimate(space, earlier), ""


def _estimate_lines(
    estimate: Estimate, bounds: EpochBounds, *, concurrent: int, full: int
) -> list[str]:
    unit = estimate.device
    most = estimate.device_seconds(bounds.most)
    least = estimate.device_seconds(bounds.least)
    wall_most = estimate.wall_seconds(bounds.most, concurrent=concurrent, full_epochs=full)
    wall_least = estimate.wall_seconds(bounds.least, concurrent=concurrent, full_epochs=full)
    if not concurrent:
        return [f"  basis: {estimate.basis}", f"  device time: at most {most:.1f} {unit}-seconds"]
    lines = [
        f"  basis: {estimate.basis}",
        f"  device time: at most {most:.1f} {unit}-seconds ({most / 3600:.4g} {unit}-hours)"
        + (
            f", at least {least:.1f} {unit}-seconds ({least / 3600:.4g} {unit}-hours)"
            if bounds.least != bounds.most
            else ""
        ),
        f"  wall time: at most {wall_most:.1f} s ({_duration(wall_most)})"
        + (
            f", at least {wall_least:.1f} s ({_duration(wall_least)})"
            if bounds.least != bounds.most
            else ""
        )
        + f" with {concurrent} trial(s) at once"
        + ("" if estimate.startup_seconds else " (start-up of Ray, MLflow and data not included)"),
    ]
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(space: SearchSpace, settings: DriverSettings, *, probe: bool) -> int:
    """Prints the plan of `space`; exit status 0."""
    for line in plan_lines(space, settings, probe=probe):
        print(line, flush=True)
    return 0
