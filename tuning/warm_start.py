"""--warm-start SWEEP: the finished trials of an earlier sweep (found by sweep id, sweep folder or
MLflow parent run id) that fit a new TPE space, read from MLflow, and added to the new sweep's
Optuna study as finished trials, so that TPE uses them without running them again (issue 27).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from lungsrad.errors import UserError
from mlflow_tracking.store import TrackingTarget
from mlflow_tracking.sweep_runs import TrialPoint, child_points
from mlflow_tracking.tags import TAG_METRIC, TAG_ROLE, TAG_SWEEP, TAG_SWEEP_ID
from tuning.result_keys import best_metric_name
from tuning.search_space import SearchSpace
from tuning.search_space.document import VARIANT_KEY
from tuning.search_space.tune_space import tune_param_space
from tuning.sweep_folder import read_state

FLAG = "--warm-start"
# Parent-run tags of a warm-started sweep.
TAG_WARM_SWEEP_ID = "lungsrad.warm_start.sweep_id"
TAG_WARM_PARENT_RUN = "lungsrad.warm_start.parent_run_id"
TAG_WARM_SWEEP = "lungsrad.warm_start.sweep"
TAG_WARM_TRIALS = "lungsrad.warm_start.trials"
# User attributes of a seeded trial in the new study.
ATTR_SEEDED_FROM = "seeded_from_sweep_id"
ATTR_SEEDED_RUN = "seeded_from_run_id"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class SeededTrial:
    """An earlier trial as a finished trial of the new study."""

    params: dict[str, Any]  # Optuna parameter name -> value as Tune samples it
    value: float  # best/<metric> of the earlier run
    run_id: str  # its MLflow run
    values: dict[str, str]  # swept parameter -> value label (as the report shows trials)


@dataclass(frozen=True)
class WarmStart:
    """What a new sweep is seeded from."""

    sweep: str
    sweep_id: str
    parent_run_id: str
    trials: tuple[SeededTrial, ...]
    left_out: int

    def tags(self) -> dict[str, str]:
        """What the new parent run records of its seed."""
        return {
            TAG_WARM_SWEEP: self.sweep,
            TAG_WARM_SWEEP_ID: self.sweep_id,
            TAG_WARM_PARENT_RUN: self.parent_run_id,
            TAG_WARM_TRIALS: str(len(self.trials)),
        }

    def record(self, objective: str) -> dict[str, Any]:
        """The parent run's warm_start.json (read by mlflow_tracking.seeded_trials)."""
        return {
            "sweep": self.sweep,
            "sweep_id": self.sweep_id,
            "parent_run_id": self.parent_run_id,
            "left_out": self.left_out,
            "objective": objective,
            "trials": [
                {"run_id": trial.run_id, "values": trial.values, "value": trial.value}
                for trial in self.trials
            ],
        }

    def describe(self) -> str:
        return (
            f"warm start: {len(self.trials)} finished trial(s) of sweep '{self.sweep}' (sweep id "
            f"{self.sweep_id}, MLflow parent run {self.parent_run_id}) seed the study"
        )


def study_distributions(space: SearchSpace) -> dict[str, Any]:
    """The Optuna distributions Ray's OptunaSearch gives the space's sampled parameters."""
    sampled = {
        key: value
        for key, value in tune_param_space(space).items()
        if not (isinstance(value, dict) and "grid_search" in value)
    }
    return dict(OptunaSearch.convert_search_space(sampled))


def read_warm_start(
    space: SearchSpace, target: TrackingTarget, reference: str, *, storage_path: Path
) -> WarmStart:
    """The earlier sweep's finished trials that fit `space` (before Ray starts). Refuses in one
    line an unknown sweep, one with other parameters or another metric; prints one line on the
    trials left out."""
    if space.search != "tpe":
        raise UserError(f"{FLAG} seeds a TPE search; '{space.path}' has search: {space.search}")
    if space.is_multi_objective:
        raise UserError(
            f"{FLAG} seeds a single-objective search; '{space.path}' names several metrics "
            "(start it without --warm-start)"
        )
    client = target.client()
    parent = _find_parent(client, reference, storage_path, target)
    tags = parent.data.tags
    earlier_metric = tags.get(TAG_METRIC)
    if earlier_metric != space.metric:
        raise UserError(
            f"{FLAG} {reference}: that sweep optimised '{earlier_metric}', this space "
            f"'{space.metric}'; warm-start from a sweep of the same metric"
        )
    points = child_points(client, parent.info.experiment_id, parent.info.run_id)
    if not points:
        raise UserError(f"{FLAG} {reference}: that sweep has no finished trial runs to seed from")
    _check_parameters(space, points, reference)
    distributions = study_distributions(space)
    seeded, reasons = [], {"outside": 0, "no value": 0}
    for point in points:
        trial = _seeded_trial(space, point, distributions)
        if isinstance(trial, str):
            reasons[trial] += 1
        else:
            seeded.append(trial)
    left_out = len(points) - len(seeded)
    if left_out:
        print(
            f"warm start: {left_out} of {len(points)} earlier trial(s) left out: "
            f"{reasons['outside']} with values outside this space's bounds or choices, "
            f"{reasons['no value']} without a finite {best_metric_name(space.metric)}",
            flush=True,
        )
    return WarmStart(
        sweep=tags.get(TAG_SWEEP, "?"),
        sweep_id=tags.get(TAG_SWEEP_ID, "?"),
        parent_run_id=parent.info.run_id,
        trials=tuple(seeded),
        left_out=left_out,
    )


def _find_parent(client: Any, reference: str, storage_path: Path, target: TrackingTarget) -> Any:
    """The parent run of the sweep that `reference` names: a sweep folder, a parent run id or a
    sweep id."""
    folder = Path(reference).expanduser()
    run_id = read_state(folder).get("parent_run_id") if folder.is_dir() else None
    if run_id is None and _RUN_ID.match(reference):
        run_id = reference
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except Exception:
            run = None
        if run is not None and run.data.tags.get(TAG_ROLE) == "sweep":
            return run
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = (
        client.search_runs(
            experiments,
            filter_string=f"tags.`{TAG_SWEEP_ID}` = '{reference}' and tags.`{TAG_ROLE}` = 'sweep'",
        )
        if experiments and "'" not in reference
        else []
    )
    if len(runs) != 1:
        found = "several sweeps have" if runs else "no sweep has"
        raise UserError(
            f"{FLAG} {reference}: {found} that sweep id, folder or MLflow parent run id in "
            f"'{target.display_uri}' (sweep folders are under {storage_path}); pass the id "
            "printed at the start of the earlier sweep"
        )
    return runs[0]


def _check_parameters(space: SearchSpace, points: list[TrialPoint], reference: str) -> None:
    wanted = sorted(parameter.name for parameter in space.parameters)
    earlier = sorted(points[0].values)
    if earlier != wanted:
        raise UserError(
            f"{FLAG} {reference}: that sweep swept {', '.join(earlier) or 'nothing'}, this "
            f"space {', '.join(wanted) or 'nothing'}; warm-start from a sweep of the same "
            "parameters"
        )


def _seeded_trial(
    space: SearchSpace, point: TrialPoint, distributions: dict[str, Any]
) -> SeededTrial | str:
    """The point as a finished trial, or why it is left out ("outside", "no value")."""
    value = point.metrics.get(best_metric_name(space.metric))
    if value is None or not math.isfinite(value):
        return "no value"
    labels = {**point.values, VARIANT_KEY: point.variant}
    params = {}
    for name, distribution in distributions.items():
        sampled = _sampled(space, name, labels.get(name), distribution)
        if sampled is None:
            return "outside"
        params[name] = sampled
    return SeededTrial(params=params, value=value, run_id=point.run_id, values=point.values)


def _sampled(space: SearchSpace, name: str, label: str | None, distribution: Any) -> Any:
    """The value Tune would have sampled for `label`, None when the distribution lacks it."""
    if label is None:
        return None
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        parameter = next((p for p in space.parameters if p.name == name), None)
        for choice in distribution.choices:
            if (parameter.label(choice) if parameter else str(choice)) == label:
                return choice
        return None
    try:
        number = float(label)
    except ValueError:
        return None
    if not distribution.low <= number <= distribution.high:
        return None
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return int(number) if number.is_integer() else None
    return number


def seed_study(study: optuna.Study, warm: WarmStart, distributions: dict[str, Any]) -> None:
    """Adds the seeded trials to a new sweep's study as finished trials."""
    for trial in warm.trials:
        study.add_trial(
            optuna.trial.create_trial(
                params=trial.params,
                distributions={name: distributions[name] for name in trial.params},
                value=trial.value,
                user_attrs={ATTR_SEEDED_FROM: warm.sweep_id, ATTR_SEEDED_RUN: trial.run_id},
            )
        )
