"""The Ray Tune experiment of a sweep: search algorithm (Optuna TPE, grid), ASHA scheduler, the
trainable with its shared data, callbacks; a new Tuner or the restored one of a resumed folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from lungsrad.metrics import EPOCH
from tuning.callbacks import MlflowLogger, ProgressPrinter, bind_callbacks
from tuning.multi_objective import multi_objective_search
from tuning.result_keys import best_metric_name
from tuning.search_space import SearchSpace
from tuning.search_space.tune_space import tune_param_space
from tuning.study import SweepStudy, searcher_arguments
from tuning.sweep_folder import SweepFolder
from tuning.sweep_tracking import SweepTracking
from tuning.trainable import train_trial


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _search_algorithm(space: SearchSpace, study: SweepStudy | None = None) -> Any:
    if space.search == "tpe":
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if space.is_multi_objective:  # several `metrics`: tuning.multi_objective
            return multi_objective_search(space, **searcher_arguments(study))
        return OptunaSearch(
            sampler=optuna.samplers.TPESampler(seed=space.search_seed),
            **searcher_arguments(study),
        )
    # Tune applies max_concurrent_trials only to Searchers; the grid generator takes it itself.
    return BasicVariantGenerator(
        random_state=space.search_seed, max_concurrent=space.max_concurrent_trials or 0
    )


def _scheduler(space: SearchSpace) -> Any:
    if space.scheduler.kind != "asha":
        return None
    # A multi-objective search has no single Tune metric: ASHA gets the first objective itself.
    multi = space.is_multi_objective
    return ASHAScheduler(
        metric=best_metric_name(space.metric) if multi else None,
        mode=space.mode if multi else None,
        time_attr=EPOCH,
        max_t=space.scheduler.max_t or space.max_epochs,
        grace_period=space.scheduler.grace_period,
        reduction_factor=space.scheduler.reduction_factor,
    )


def build_tuner(
    space: SearchSpace,
    folder: SweepFolder,
    *,
    feature_set: Any,
    context: Any,
    tracking: SweepTracking,
    callbacks: Sequence[Any] = (),
    study: SweepStudy | None = None,
) -> Any:
    """A new Tuner, or the restored one of a resumed sweep folder (TPE: the searcher keeps its
    trials in `study`'s storage; a restored searcher reopens the same study)."""
    trainable = trial_trainable(space, feature_set=feature_set, context=context)
    if not folder.is_new and tune.Tuner.can_restore(str(folder.path)):
        return restore_tuner(folder.path, trainable, tracking)
    return tune.Tuner(
        trainable,
        param_space=tune_param_space(space),
        tune_config=tune.TuneConfig(
            # Several objectives: the searcher holds them (a Tune metric would replace them).
            metric=None if space.is_multi_objective else best_metric_name(space.metric),
            mode=None if space.is_multi_objective else space.mode,
            search_alg=_search_algorithm(space, study),
            scheduler=_scheduler(space),
            num_samples=space.num_samples,
            max_concurrent_trials=space.max_concurrent_trials if space.search == "tpe" else None,
            trial_dirname_creator=_trial_dirname,
            # A finished trial's process (torch and compiled kernels loaded) runs
            # the next trial: saves seconds of imports per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=folder.path.name,
            storage_path=str(folder.path.parent),
            failure_config=tune.FailureConfig(max_failures=space.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
            # MLflow first: a trial's progress line is printed once its run holds the event.
            callbacks=[
                MlflowLogger(space, tracking),
                ProgressPrinter(space, tracking=tracking),
                *callbacks,
            ],
        ),
    )


def trial_trainable(space: SearchSpace, *, feature_set: Any, context: Any) -> Any:
    """`train_trial` with the sweep's shared data and each trial's resources."""
    return tune.with_resources(
        tune.with_parameters(train_trial, feature_set=feature_set, context=context),
        space.resources.as_dict(),
    )


def restore_tuner(path: Path, trainable: Any, tracking: SweepTracking) -> Any:
    """The Tuner of an interrupted experiment folder, its unfinished and errored trials resumed.

    Tune rebuilds the callbacks from the experiment state, where they hold no tracking: they
    get this driver's again (the run config is reached through the local tuner, since
    `Tuner.restore` takes no callbacks)."""
    tuner = tune.Tuner.restore(
        str(path), trainable=trainable, resume_unfinished=True, resume_errored=True
    )
    local = getattr(tuner, "_local_tuner", None)
    if local is not None:
        bind_callbacks(local.get_run_config().callbacks or (), tracking)
    return tuner
