"""How a sweep presents itself: the parent run's name, description and winner metrics, the
experiment's saved view of the sweep's runs, and the closing lines printed by the CLIs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.metrics import (
    REPORT_SCORE,
    REPORT_SCORE_2CLASS,
    REPORT_SENSITIVITY,
    REPORT_SPECIFICITY,
)
from mlflow_tracking.pareto import TAG_PARETO
from mlflow_tracking.saved_view import (
    SweepView,
    sweep_share_key,
    swept_param_keys,
    ui_hint,
    write_saved_view,
)
from mlflow_tracking.store import TrackingTarget
from mlflow_tracking.tags import TAG_DEGENERATE, TAG_SWEEP_ID, TAG_TRIAL_STATUS, TAG_VARIANT
from tuning.result_keys import best_metric_name
from tuning.results import all_degenerate_note, mean_metric_name
from tuning.search_space import SearchSpace, short_parameter_names


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished sweep produced."""

    folder: Path
    tracking: TrackingTarget
    parent_run_id: str
    outcomes: list  # tuning.results.TrialOutcome
    best: Any  # tuning.results.BestChoice | None
    best_config_path: Path | None
    summary_path: Path
    seconds: float
    view_key: str | None = None  # share key of the experiment's saved view of this sweep
    cost: Any = None  # tuning.cost.SweepCost
    paired_table: str = ""  # one_at_a_time: each point against the base, paired by seed


def parent_run_name(space: SearchSpace, role: str) -> str:
    """A parent run name that says what was swept, e.g. "smoke: tpe over temperature, sigma"."""
    if role != "sweep":
        return f"{space.name}: {role} seeds {list(space.seeds)}"[:240]
    swept = list(short_parameter_names([p.name for p in space.parameters]).values())
    if space.has_variants:
        swept.insert(0, f"{len(space.variants)} variants")
    return f"{space.name}: {space.search} over {', '.join(swept) or 'seeds'}"[:240]


def objectives_line(space: SearchSpace) -> str:
    """The console line of a multi-objective sweep: its objectives, sampler, constraints, and
    that ASHA (one metric only) stops trials by the first objective."""
    objectives = ", ".join(f"{o.name} {o.mode}" for o in space.objective_list)
    bounds = "; ".join(c.describe() for c in space.constraints)
    asha = (
        f"; ASHA stops trials by the first objective only ({best_metric_name(space.metric)})"
        if space.scheduler.kind == "asha"
        else ""
    )
    return (
        f"  multi-objective: {objectives} (Optuna {space.sampler} sampler)"
        + (f"; constraints: {bounds}" if bounds else "")
        + f"{asha}; the sweep ends with the Pareto front (pareto/, best_configs/)"
    )


def best_metrics(space: SearchSpace, best: Any) -> dict[str, float]:
    """Parent-run metrics of the winner (shown in the runs table's metric columns)."""

    scores = [m.report_score for m in best.members]
    return {
        best_metric_name(space.metric): best.mean_value,
        f"best_config/{REPORT_SCORE}": statistics.fmean(scores),
        "best_config/seeds": float(len(best.members)),
    }


def best_description(space: SearchSpace, best: Any, outcomes: Sequence[Any], role: str) -> str:
    """The parent run's description (markdown, shown on its run page): the winner and its score,
    or that no trial finished."""
    done = sum(outcome.status == "done" for outcome in outcomes)
    if best is None:
        head = "**No trial finished**: see the failed child runs' `lungsrad.failure` tag"
    else:
        seeds = sorted(member.resolved.seed for member in best.members)
        name = (
            best.representative.resolved.describe_config()
            if role == "sweep"
            else f"config '{best.config.name}'"
        )
        head = (
            f"**{'Best configuration' if role == 'sweep' else 'Final training'}**: {name}  \n"
            f"mean `{best_metric_name(space.metric)}` = **{best.mean_value:.2f}** over seed(s) "
            f"{seeds}; best trial run **{best.representative.resolved.describe_short()}** "
            f"(Tune trial `{best.representative.trial_id}`)"
        )
        if best.degenerate:
            head += f"  \n**Warning**: {best.degenerate}"
    return (
        f"{head}  \n{done} of {len(outcomes)} trials finished; search `{space.search}`, "
        f"protocol `{space.protocol}`. See the artifacts summary.md and report/."
    )


def sweep_view(space: SearchSpace, sweep_id: str, role: str = "sweep") -> Any:
    """The saved view of a sweep's runs page: the sweep metric, every swept parameter and the
    seed, the report scores, the trial status and degenerate tags; best first; only this sweep's
    runs. A final's view starts with the mean Score, Sp and Se over seeds (its parent run's
    Table 1 metrics), so the answer is the top row, not its best seed."""
    paths = [path for parameter in space.parameters for path in parameter.config_paths]
    metric = best_metric_name(space.metric)
    reported: tuple[str, ...] = (
        REPORT_SCORE,
        REPORT_SPECIFICITY,
        REPORT_SENSITIVITY,
        REPORT_SCORE_2CLASS,
    )
    means: tuple[str, ...] = ()
    if role != "sweep":
        means = tuple(mean_metric_name(key) for key in (REPORT_SPECIFICITY, REPORT_SENSITIVITY))
        metric, reported = mean_metric_name(REPORT_SCORE), (metric, *reported)
    return SweepView(
        name=f"{space.name} {sweep_id}: " + ("best first" if role == "sweep" else "mean first"),
        metric=metric,
        maximize=space.mode == "max",
        other_metrics=(*means, *reported),
        params=swept_param_keys(paths),
        tags=(
            TAG_TRIAL_STATUS,
            TAG_DEGENERATE,
            *((TAG_VARIANT,) if space.has_variants else ()),
            *((TAG_PARETO,) if space.is_multi_objective else ()),
        ),
        search_filter=f"tags.`{TAG_SWEEP_ID}` = '{sweep_id}'",
        chart_metric=best_metric_name(space.metric),
        # A multi-objective sweep's other objectives, right after the first one.
        objective_metrics=tuple(best_metric_name(o.name) for o in space.objective_list[1:]),
    )


def write_sweep_view(
    space: SearchSpace, target: TrackingTarget, sweep_id: str, role: str = "sweep"
) -> str | None:
    """Stores the sweep's saved view on its experiment; its share key, or None (with one warning
    line) when the tracking store refuses the experiment tag."""
    key = sweep_share_key(sweep_id)
    stored = write_saved_view(
        target.client(), target.experiment_id, key, sweep_view(space, sweep_id, role), target.uri
    )
    return key if stored else None


def mlflow_ui_hint(target: TrackingTarget, view_key: str | None = None) -> str:
    """How to look at the runs: the experiment's runs page in the "Model training" view, with the
    sweep's saved view when it was stored. MLflow 3.x UIs open every experiment in their "GenAI"
    view unless the address asks for "Model training", and apply a saved view only on the
    /runs route."""
    return ui_hint(target.display_uri, target.experiment_id, view_key)


def print_outcome(outcome: SweepOutcome, *, role: str = "sweep") -> None:
    """The closing lines: counts, best trial, where best_config.yaml and the runs are."""
    done = sum(o.status == "done" for o in outcome.outcomes)
    failed = len(outcome.outcomes) - done
    print(
        f"{role} finished in {outcome.seconds:.0f} s: {len(outcome.outcomes)} trials, {done} done, "
        f"{failed} failed"
    )
    if outcome.best is not None and role == "sweep":
        described = outcome.best.representative.resolved.describe_config()
        seeds = len(outcome.best.members)
        flag = f"; {outcome.best.degenerate}" if outcome.best.degenerate else ""
        print(f"best: {described} (mean {outcome.best.mean_value:.2f} over {seeds} seed(s)){flag}")
        every = all_degenerate_note(outcome.best)
        if every:
            print(f"warning: {every[0].lower()}{every[1:]}")
    if outcome.cost is not None:
        print(f"cost: {outcome.cost.one_line()}")
    if outcome.best_config_path is not None:
        print(f"best config: {outcome.best_config_path}")
    print(f"summary: {outcome.summary_path}")
    print(
        f"MLflow: {outcome.tracking.display_uri}, experiment '{outcome.tracking.experiment_name}', "
        f"parent run {outcome.parent_run_id}"
    )
    print(f"  view: {mlflow_ui_hint(outcome.tracking, outcome.view_key)}")
    if outcome.paired_table:
        print(f"\n{outcome.paired_table}", end="")
