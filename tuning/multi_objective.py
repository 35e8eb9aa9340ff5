"""The Optuna search of a multi-objective space (search-space key `metrics`): Ray Tune's
OptunaSearch with one metric and mode per objective, Optuna's multi-objective TPE or NSGA-II
sampler, and the space's constraints set on each Optuna trial as it completes (Ray's
OptunaSearch passes none: a subclass sets them before it tells Optuna the trial's values).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from tuning.result_keys import best_metric_name
from tuning.search_space import SearchSpace

# The violation given to a trial that reported no value of a constrained metric.
MISSING_VIOLATION = 1.0e9


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that sets each completed trial's constraint violations on its Optuna trial
    (`Trial.set_constraint`, which Optuna 5's TPE and NSGA-II samplers read) before telling
    Optuna its values."""

    def __init__(self, *args: Any, constraints: Sequence[Any] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lungsrad_constraints = tuple(constraints)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is not None and trial_id not in self._completed_trials:
            pairs = zip(
                self._lungsrad_constraints,
                violations(self._lungsrad_constraints, result),
                strict=True,
            )
            for constraint, violation in pairs:
                trial.set_constraint(constraint.describe(), violation)
        super().on_trial_complete(trial_id, result=result, error=error)


def violations(constraints: Sequence[Any], result: dict | None) -> list[float]:
    """Each constraint's violation by a trial's last result (tuning.search_space
    ConstraintSpec.violation of its `best/<name>` value; MISSING_VIOLATION when absent)."""
    values = []
    for constraint in constraints:
        value = (result or {}).get(best_metric_name(constraint.name), math.nan)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        values.append(constraint.violation(float(value)) if finite else MISSING_VIOLATION)
    return values


def multi_objective_search(space: SearchSpace, **optuna_search: Any) -> Any:
    """The Tune searcher of a multi-objective space: every objective's `best/<name>`, its
    mode, and the space's sampler (`tpe` or `nsga2`) with its constraints. `optuna_search`:
    further OptunaSearch arguments (e.g. storage, study_name)."""
    objectives = space.objective_list
    sampler: optuna.samplers.BaseSampler
    if space.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=space.search_seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=space.search_seed)
    return ConstrainedOptunaSearch(
        metric=[best_metric_name(objective.name) for objective in objectives],
        mode=[objective.mode for objective in objectives],
        sampler=sampler,
        constraints=space.constraints,
        **optuna_search,
    )
