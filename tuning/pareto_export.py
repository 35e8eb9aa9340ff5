"""What a multi-objective sweep exports (search-space key `metrics`): its Pareto front over the
configurations (mlflow_tracking.pareto, means over seeds), one config per front point in
`best_configs/` named after its run, best_config.yaml for the point that wins the tie-break, the
front's table and plot in summary.md and `pareto/` (logged to the parent run under
report/pareto), and the tag `lungsrad.pareto` on the child runs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lungsrad.errors import first_line
from lungsrad.files import write_text_atomic
from mlflow_tracking.pareto import (
    PARETO_FILE,
    TAG_PARETO,
    TIE_BREAK,
    Candidate,
    ParetoFront,
    pareto_front,
    write_pareto_report,
)
from mlflow_tracking.run_writer import RunTracker
from mlflow_tracking.store import TrackingTarget
from mlflow_tracking.tags import PARENT_RUN_TAG, TAG_TRIAL_ID
from mlflow_tracking.uri import redact_text
from tuning.outcomes import BestChoice, ConfigurationSummary, TrialOutcome
from tuning.result_keys import best_metric_name
from tuning.results import export_best_config, selection_record, summarize_configurations
from tuning.search_space import SearchSpace

PARETO_FOLDER = "pareto"  # the sweep folder's table and plot of the front
BEST_CONFIGS_FOLDER = "best_configs"  # one config per front point, named after its run
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


@dataclass(frozen=True)
class ParetoOutcome:
    """The front of a sweep's configurations and the configurations behind its points."""

    front: ParetoFront
    summaries: dict[str, ConfigurationSummary]  # Candidate.key -> its configuration

    def choice(self, index: int) -> BestChoice:
        """The front's index-th point (0: the tie-break winner) as a BestChoice."""
        summary = self.summaries[self.front.points[index].key]
        return BestChoice(
            members=summary.done,
            mean_value=summary.selection.mean,
            configurations=len(self.front.candidates),
        )

    @property
    def best(self) -> BestChoice | None:
        """The tie-break winner (what best_config.yaml holds), or None without a front."""
        return self.choice(0) if self.front.front else None

    def front_trial_ids(self) -> set[str]:
        """The trial ids of every seed of the front's configurations."""
        return {m.trial_id for c in self.front.points for m in self.summaries[c.key].done}


def pareto_outcome(space: SearchSpace, outcomes: Sequence[TrialOutcome]) -> ParetoOutcome:
    """The Pareto front of the finished configurations (each objective and constraint as the
    trials reported it: `best/<name>`, read at the epoch where the first objective was best)."""
    names = [o.name for o in space.objective_list] + [c.name for c in space.constraints]
    summaries = summarize_configurations(
        outcomes, mode=space.mode, metric=best_metric_name(space.metric)
    )
    candidates, by_key = [], {}
    for summary in summaries:
        if not summary.done:
            continue
        representative = min(summary.done, key=lambda m: m.resolved.seed)
        samples = {
            name: [float(m.last.get(best_metric_name(name), float("nan"))) for m in summary.done]
            for name in dict.fromkeys(names)
        }
        key = representative.trial_id
        candidates.append(
            Candidate(
                label=representative.resolved.describe_short()[:240], samples=samples, key=key
            )
        )
        by_key[key] = summary
    front = pareto_front(candidates, space.objective_list, space.constraints)
    return ParetoOutcome(front=front, summaries=by_key)


def tie_break_header(space: SearchSpace) -> str:
    """The line best_config.yaml of a multi-objective sweep states its choice with."""
    objectives = ", ".join(f"{o.name} ({o.mode})" for o in space.objective_list)
    return (
        f"Multi-objective sweep ({objectives}): this is the Pareto point that wins the "
        f"tie-break, {TIE_BREAK}; every front point is in {BEST_CONFIGS_FOLDER}/"
    )


def export_pareto(
    space: SearchSpace,
    folder: Path,
    parent: RunTracker,
    pareto: ParetoOutcome,
    *,
    target: TrackingTarget,
    export_configs: bool,
) -> list[str]:
    """Writes pareto/ (table and plot), best_configs/ (one config per front point) and the
    child runs' Pareto tags; the summary's section on the front."""
    report = folder / PARETO_FOLDER
    lines, _ = write_pareto_report(
        pareto.front,
        report,
        title=f"{space.name}: Pareto front of {len(pareto.front.candidates)} configurations",
        winner_mark="best_config.yaml",
    )
    write_text_atomic(report / PARETO_FILE, "\n".join(lines) + "\n")
    parent.log_artifacts(report, f"report/{PARETO_FOLDER}")
    if export_configs:
        written = _export_point_configs(space, folder, parent, pareto)
        lines += ["", f"One config per front point in `{written}/`."]
    tagged = tag_pareto_runs(target, str(parent.run_id), pareto.front_trial_ids())
    print(
        f"Pareto front: {len(pareto.front.front)} of {len(pareto.front.candidates)} "
        f"configurations; {tagged} child run(s) tagged {TAG_PARETO}; {report / PARETO_FILE}",
        flush=True,
    )
    return lines


def _export_point_configs(
    space: SearchSpace, folder: Path, parent: RunTracker, pareto: ParetoOutcome
) -> Path:
    """best_configs/<run name>.yaml for every front point (an earlier different file kept as
    `.partial-<time>`, never overwritten); the folder."""
    target = folder / BEST_CONFIGS_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for rank, point in enumerate(pareto.front.points):
        choice = pareto.choice(rank)
        stem = _UNSAFE.sub("_", point.label).strip("_")[:150] or "point"
        if stem in used:
            stem = f"{stem}-{point.key}"
        used.add(stem)
        values = "; ".join(f"{o.name} {point.mean(o.name):.4f}" for o in space.objective_list)
        header = (
            f"Pareto point {rank + 1} of {len(pareto.front.front)} of sweep '{space.name}' "
            f"({folder.name}): {choice.representative.resolved.describe_config()}\n"
            f"run '{point.label}'; means over {len(choice.members)} seed(s): {values}\n"
            + (f"{tie_break_header(space)}\n" if rank == 0 else "")
            + "Train it on several seeds: "
            "python tuning/final.py --config THIS_FILE --seeds 0 1 2 3 4"
        )
        record = {
            **selection_record(
                choice, metric=best_metric_name(space.metric), reseeded=space.reseed is not None
            ),
            **({"requires_pretrained": True} if space.requires_pretrained else {}),
        }
        export_best_config(choice, target, header=header, record=record, file_name=f"{stem}.yaml")
    parent.log_artifacts(target, BEST_CONFIGS_FOLDER)
    return target


def tag_pareto_runs(target: TrackingTarget, parent_run_id: str, front: set[str]) -> int:
    """Tags every child run of the parent `lungsrad.pareto` = "true" (its trial is on the
    front) or "false"; how many are on the front (0 with a warning when MLflow fails)."""
    client = target.client()
    tagged = 0
    try:
        token = None
        while True:
            page = client.search_runs(
                [target.experiment_id],
                filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
                max_results=1000,
                page_token=token,
            )
            for run in page:
                on_front = run.data.tags.get(TAG_TRIAL_ID) in front
                client.set_tag(run.info.run_id, TAG_PARETO, "true" if on_front else "false")
                tagged += on_front
            token = page.token
            if not token:
                return tagged
    except Exception as error:  # MLflow down: the front is on disk all the same
        reason = redact_text(first_line(error, empty=""), target.uri)
        print(
            f"warning: could not tag the Pareto runs in MLflow ({type(error).__name__}: {reason})",
            file=sys.stderr,
        )
        return 0


def insert_section(summary: str, lines: Sequence[str]) -> str:
    """summary.md with the Pareto section before its configurations table (the plot linked
    from the sweep folder)."""
    section = "\n".join(
        line.replace("](pareto_front.png)", f"]({PARETO_FOLDER}/pareto_front.png)")
        for line in lines
    )
    marker = "## Configurations, best first"
    if marker in summary:
        return summary.replace(marker, f"{section}\n\n{marker}", 1)
    return f"{summary}\n{section}\n"
