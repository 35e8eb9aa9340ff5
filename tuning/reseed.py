"""Seed-robust selection (search-space key `reseed: {top_k: 3, seeds: [1, 2]}`): after the search,
the top k configurations run again on extra seeds, so the exported best is a mean over seeds
rather than one lucky trial. Runs as a second Tune experiment in `<sweep folder>/reseed`.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from tuning.callbacks import MlflowLogger, ProgressPrinter
from tuning.interrupts import SweepInterrupted, received_signal, tune_running
from tuning.results import TrialOutcome, collect_outcomes, summarize_configurations
from tuning.search_space import SEED_KEY, SearchSpace
from tuning.sweep_tracking import SweepTracking
from tuning.tuner import restore_tuner, trial_trainable

RESEED_FOLDER = "reseed"
_INDEX_KEY = "reseed_index"  # which of the re-run Tune configs a reseed trial is


def reseed_configs(space: SearchSpace, outcomes: Sequence[TrialOutcome]) -> list[dict[str, Any]]:
    """The Tune configs to run: each of the top_k configurations (by mean of the sweep metric,
    finished ones only) on each extra seed it has not run yet."""
    assert space.reseed is not None
    ranked = [c for c in summarize_configurations(outcomes, mode=space.mode) if c.done]
    configs = []
    for summary in ranked[: space.reseed.top_k]:
        seeds_run = {member.resolved.seed for member in summary.members}
        template = summary.done[0].tune_config
        for seed in space.reseed.seeds:
            if seed not in seeds_run:
                configs.append({**template, SEED_KEY: seed})
    return configs


def _follower(configs: list[dict[str, Any]], key: str) -> Callable[[dict[str, Any]], Any]:
    """The value of `key` in the re-run config the trial's index names."""

    def value(config: dict[str, Any]) -> Any:
        return configs[config[_INDEX_KEY]].get(key)

    return value


def _param_space(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """A grid over the configs' index; every other key follows the index, so a trial's config
    is flat like a search trial's (the trainable resolves it with the same SearchSpace)."""
    keys = sorted({key for config in configs for key in config})
    space: dict[str, Any] = {_INDEX_KEY: tune.grid_search(list(range(len(configs))))}
    for key in keys:
        space[key] = tune.sample_from(_follower(configs, key))
    return space


def run_reseed(
    space: SearchSpace,
    outcomes: Sequence[TrialOutcome],
    folder: Path,
    *,
    feature_set: Any,
    context: Any,
    tracking: SweepTracking,
    callbacks: Sequence[Any] = (),
) -> list[TrialOutcome]:
    """Runs (or, when `folder`/reseed holds an unfinished run, resumes) the re-seeded trials on
    the connected Ray and returns their outcomes (no scheduler: every trial runs to the end)."""
    configs = reseed_configs(space, outcomes)
    if not configs:
        return []
    print(
        f"reseed: the top {space.reseed.top_k if space.reseed else 0} configurations on seeds "
        f"{list(space.reseed.seeds) if space.reseed else []}: {len(configs)} more trials",
        flush=True,
    )
    trainable = trial_trainable(space, feature_set=feature_set, context=context)
    path = folder / RESEED_FOLDER
    if tune.Tuner.can_restore(str(path)):
        tuner = restore_tuner(path, trainable, tracking)
    else:
        # The progress lines count the reseed trials, not the search's.
        counted = dataclasses.replace(space, search="tpe", num_samples=len(configs))
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(configs),
            tune_config=tune.TuneConfig(
                # The grid generator takes the concurrency limit itself (Tune applies
                # max_concurrent_trials to Searchers only).
                search_alg=BasicVariantGenerator(max_concurrent=space.max_concurrent_trials or 0),
                trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=RESEED_FOLDER,
                storage_path=str(folder),
                failure_config=tune.FailureConfig(max_failures=space.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=0,
                callbacks=[
                    MlflowLogger(space, tracking),
                    ProgressPrinter(counted, tracking=tracking),
                    *callbacks,
                ],
            ),
        )
    with tune_running():
        grid = tuner.fit()
    # Tune marks the trials it stopped on a signal TERMINATED: only the signal tells.
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    if received_signal() is not None or unfinished > 0:
        raise SweepInterrupted(received_signal() or signal.SIGINT, f"{path}")
    return collect_outcomes(grid, space, resolved=tracking.resolved)
