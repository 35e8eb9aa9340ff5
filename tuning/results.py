"""Reading a finished sweep: per-trial outcomes, the best configuration (mean over seeds under the
sweep's protocol), best_config.yaml export, markdown summaries, and the Table-1 style summary.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from lungsrad.config import dump_config
from lungsrad.errors import UserError, first_line
from lungsrad.files import write_text_atomic
from lungsrad.metrics import (
    EPOCH,
    REPORT_SCORE,
    REPORT_SCORE_2CLASS,
    REPORT_SENSITIVITY,
    REPORT_SENSITIVITY_2CLASS,
    REPORT_SPECIFICITY,
    REPORT_SPECIFICITY_2CLASS,
    metric_range,
)
from lungsrad.statistics import (
    MIN_INTERVAL_COUNT,
    format_interval,
    mean_interval,
)
from tuning.outcomes import (
    BestChoice,
    ConfigurationSummary,
    TrialOutcome,
    degenerate_members,
    fold_of,
    format_number,
    is_finished,
    run_label,
    seed_of,
)
from tuning.paired import points_against_base_markdown
from tuning.result_keys import FAILURE_KEY, best_metric_name
from tuning.search_space import SearchSpace
from tuning.sweep_tracking import ResolvedTrials

BEST_CONFIG_FILE = "best_config.yaml"
SELECTION_RECORD_PREFIX = "selection: "  # best_config.yaml comment line holding the JSON record
SUMMARY_FILE = "summary.md"
TABLE1_ROWS = (
    ("4-class", REPORT_SPECIFICITY, REPORT_SENSITIVITY, REPORT_SCORE),
    ("2-class", REPORT_SPECIFICITY_2CLASS, REPORT_SENSITIVITY_2CLASS, REPORT_SCORE_2CLASS),
)


def _rank_key(value: float, mode: str) -> tuple[bool, float]:
    """Sort key: best first under `mode`, NaN last."""
    if not math.isfinite(value):
        return (True, 0.0)
    return (False, -value if mode == "max" else value)


def _configuration_rank_key(summary: ConfigurationSummary, mode: str) -> tuple[bool, bool, float]:
    """Configurations with a finished seed first, then those without a degenerate seed, then
    by mean under `mode`."""
    missing, value = _rank_key(summary.selection.mean, mode)
    return (missing, summary.degenerate is not None, value)


def summarize_configurations(
    outcomes: Sequence[TrialOutcome], *, mode: str, metric: str | None = None
) -> list[ConfigurationSummary]:
    """Outcomes grouped by configuration (equal variant and swept values), best mean first,
    except that a configuration with a degenerate seed (`degenerate_members`) ranks below every
    one without; configurations without a finished seed last. Ties keep trial order.
    `metric` (the sweep metric) bounds the selection interval (lungsrad.metrics.metric_range)."""
    groups: dict[str, list[TrialOutcome]] = {}
    for outcome in outcomes:
        groups.setdefault(outcome.resolved.group_key(), []).append(outcome)
    summaries = []
    for members in groups.values():
        done = [m for m in members if is_finished(m)]
        summaries.append(
            ConfigurationSummary(
                members=tuple(sorted(members, key=seed_of)),
                selection=mean_interval(
                    [m.best_value for m in done],
                    bounds=metric_range(metric) if metric else None,
                ),
                report=mean_interval(
                    [m.report_score for m in done], bounds=metric_range(REPORT_SCORE)
                ),
            )
        )
    return sorted(summaries, key=lambda summary: _configuration_rank_key(summary, mode))


def collect_outcomes(
    result_grid: Any, space: SearchSpace, *, resolved: ResolvedTrials | None = None
) -> list[TrialOutcome]:
    """TrialOutcome per trial of a Tune ResultGrid, in trial order; `resolved`: the driver's
    resolved trial configs (a trial missing there is resolved here)."""
    resolved = resolved if resolved is not None else ResolvedTrials(space)
    best_name = best_metric_name(space.metric)
    outcomes = []
    for result in result_grid:
        metrics = dict(result.metrics or {})
        # The folder is named by tuning.tuner's trial_dirname_creator ("trial_<id>"); a trial
        # that failed before reporting has no trial_id in its metrics.
        folder = Path(str(result.path)).name
        trial_id = folder.removeprefix("trial_") if folder.startswith("trial_") else None
        trial_id = str(trial_id or metrics.get("trial_id"))
        error = None
        if result.error is not None:
            error = first_line(result.error, empty="error")[:300]
        elif FAILURE_KEY in metrics:  # diverged, then stopped by the scheduler before raising
            error = str(metrics[FAILURE_KEY])
        outcomes.append(
            TrialOutcome(
                trial_id=trial_id,
                resolved=resolved.get(trial_id, result.config),
                status="failed" if error is not None else "done",
                epochs=int(metrics.get(EPOCH, 0) or 0),
                best_value=float(metrics.get(best_name, math.nan)),
                last=metrics,
                error=error,
                tune_config=dict(result.config),
            )
        )
    return sorted(outcomes, key=lambda outcome: outcome.trial_id)


def choose_best(outcomes: Sequence[TrialOutcome], *, mode: str) -> BestChoice | None:
    """The configuration with the best mean (over seeds) of the sweep metric's running best.

    Under protocol 'paper' the metric is the test score of the best epoch; under 'validated' the
    validation score of the val-selected epoch, so no test number picks the winner. Failed
    trials and trials without a finite value are left out; ties go to the earlier trial. A
    configuration with a degenerate seed is chosen only when every configuration has one.
    """
    summaries = [s for s in summarize_configurations(outcomes, mode=mode) if s.done]
    if not summaries:
        return None
    return BestChoice(
        members=summaries[0].done,
        mean_value=summaries[0].selection.mean,
        configurations=len(summaries),
    )


def write_superseding_text(path: Path, text: str) -> Path:
    """Writes `text` to `path` atomically; a different earlier file there (the export of an
    interrupted run of the same sweep, by an older version) is kept first as
    `STEM.partial-<its time>SUFFIX` (`-2`, ... when taken). Returns `path`."""
    if path.exists() and path.read_text(encoding="utf-8") != text:
        stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        number = 1
        while True:
            extra = "" if number == 1 else f"-{number}"
            kept = path.with_name(f"{path.stem}.partial-{stamp}{extra}{path.suffix}")
            try:
                os.link(path, kept)  # fails when taken: a kept file is never replaced
                break
            except FileExistsError:
                number += 1
    write_text_atomic(path, text)
    return path


def selection_record(best: BestChoice, *, metric: str, reseeded: bool) -> dict[str, Any]:
    """What the export rests on: the metric, seeds, per-seed scores, mean and 95 % interval."""
    scores = best.seed_scores
    interval = mean_interval(list(scores.values()), bounds=metric_range(metric))
    return {
        "metric": metric,
        "seeds": list(scores),
        "scores": [round(value, 6) for value in scores.values()],
        "mean": round(interval.mean, 6),
        "ci95": [round(interval.low, 6), round(interval.high, 6)]
        if interval.has_interval
        else None,
        "reseeded": reseeded,
        "degenerate": best.degenerate,
    }


def selection_note(record: dict[str, Any]) -> str:
    """One sentence on how much the choice can be trusted."""
    seeds = len(record["seeds"])
    if seeds == 1:
        return (
            f"This choice rests on 1 seed ({record['metric']} {record['mean']:.2f}): a seed's "
            "spread on ICBHI is about a point, so re-run the top configurations on more seeds "
            "(search-space key `reseed`) or train this one with tuning/final.py."
        )
    if record["ci95"] is None:
        return (
            f"This choice rests on {seeds} seeds: mean {record['metric']} {record['mean']:.2f} "
            f"(n={seeds}: no interval; {MIN_INTERVAL_COUNT} seeds or more give one)."
        )
    low, high = record["ci95"]
    return (
        f"This choice rests on {seeds} seeds: mean {record['metric']} {record['mean']:.2f}, "
        f"95 % interval [{low:.2f}, {high:.2f}]."
    )


def export_best_config(
    best: BestChoice,
    folder: Path,
    *,
    header: str,
    record: dict[str, Any],
    file_name: str = BEST_CONFIG_FILE,
) -> Path:
    """Writes best_config.yaml (or `file_name`: a complete resolved config) into `folder`, with
    a comment header (a warning first when the choice is a degenerate classifier) and a comment
    line `selection: {JSON}` (see `read_selection_record`)."""
    lines = [
        *degenerate_warning(best),
        *header.splitlines(),
        selection_note(record),
    ]
    lines.append(SELECTION_RECORD_PREFIX + json.dumps(record))
    comment = "".join(f"# {line}\n" for line in lines)
    return write_superseding_text(folder / file_name, comment + dump_config(best.config))


def read_selection_record(path: Path) -> dict[str, Any]:
    """The `selection:` record of an exported best_config.yaml.

    Raises:
        UserError: the file has no record (not written by export_best_config).
    """
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# " + SELECTION_RECORD_PREFIX):
            return json.loads(line[len("# " + SELECTION_RECORD_PREFIX) :])
    raise UserError(f"{path} has no '# {SELECTION_RECORD_PREFIX}' line; export it again")


def summary_markdown(
    space: SearchSpace,
    outcomes: Sequence[TrialOutcome],
    best: BestChoice | None,
    *,
    costs: Mapping[str, Any] | None = None,
    cost: Any = None,
) -> str:
    """Markdown: sweep settings, configurations best first (mean, std and 95 % interval over
    seeds), every trial best first, then what the sweep cost (`costs`: tuning.cost.TrialCost per
    trial id; `cost`: tuning.cost.SweepCost)."""
    best_name = best_metric_name(space.metric)
    lines = [
        f"# Sweep `{space.name}`",
        "",
        f"search `{space.search}`, scheduler `{space.scheduler.kind}`, protocol "
        f"`{space.protocol}`, metric `{space.metric}` ({space.mode}), seeds {list(space.seeds)}",
        "",
    ]
    if best is not None:
        record = selection_record(best, metric=best_name, reseeded=False)
        chosen = next(
            c for c in summarize_configurations(best.members, mode=space.mode, metric=best_name)
        )
        lines += [
            f"**Best configuration**: {best.representative.resolved.describe_config()} "
            f"({best_name} {format_interval(chosen.selection)}; "
            f"{REPORT_SCORE} {format_interval(chosen.report)})",
            "",
            selection_note(record),
            "",
        ]
        for line in degenerate_warning(best):
            lines += [f"**{line}**", ""]
    paired = points_against_base_markdown(space, outcomes)
    if paired:
        lines += [paired]
    unit = f" | {_cost_unit(costs)}" if costs else ""
    lines += [
        "## Configurations, best first",
        "",
        "mean ± sample std [95 % Student-t interval] over finished seeds; one seed has no spread. "
        "Ties keep trial-id order (as in the report).",
        "",
        f"| rank | configuration | seeds done | {best_name} | {REPORT_SCORE}{unit} |",
        "|---:|---|---:|---:|---:|" + ("---:|" if costs else ""),
    ]
    summaries = summarize_configurations(outcomes, mode=space.mode, metric=best_name)
    for rank, summary in enumerate(summaries, start=1):
        spent = _cost_cell(costs, summary.members) if costs else ""
        flag = f" ({summary.degenerate})" if summary.degenerate else ""
        lines.append(
            f"| {rank} | {summary.description}{flag} | {len(summary.done)}/{len(summary.members)} "
            f"| {format_interval(summary.selection)} | {format_interval(summary.report)}{spent} |"
        )
    lines += [
        "",
        "## Trials, best first",
        "",
        f"| trial | configuration | seed | status | epochs | {best_name} | {REPORT_SCORE}{unit} |",
        "|---|---|---:|---|---:|---:|---:|" + ("---:|" if costs else ""),
    ]
    ordered = sorted(outcomes, key=lambda o: _rank_key(o.best_value, space.mode))
    for outcome in ordered:
        status = outcome.status if outcome.error is None else f"failed: {outcome.error}"
        note = outcome.degenerate
        if note:
            status += f" ({note})"
        spent = _cost_cell(costs, [outcome]) if costs else ""
        lines.append(
            f"| {outcome.trial_id} | {outcome.resolved.describe_config()} "
            f"| {outcome.resolved.seed} | {status.replace('|', '/')} | {outcome.epochs} "
            f"| {format_number(outcome.best_value)} "
            f"| {format_number(outcome.report_score)}{spent} |"
        )
    if cost is not None:
        lines += ["", *cost.markdown()]
    return "\n".join(lines) + "\n"


def degenerate_warning(best: BestChoice) -> list[str]:
    """Lines saying that the chosen configuration is a degenerate classifier (which of its
    seeds: `degenerate_members`) and, when it was chosen from several, that all of them are
    (the non-degenerate ones rank first); [] when it is not."""
    note = best.degenerate
    if note is None:
        return []
    every = all_degenerate_note(best)
    verb = "is" if note.startswith("degenerate:") else "has"
    return [f"Warning: the best configuration {verb} {note}.", *([every] if every else [])]


def all_degenerate_note(best: BestChoice) -> str | None:
    """That every configuration is degenerate, when the best one is and was chosen from several
    (a configuration with a degenerate seed ranks below any without); else None."""
    if best.degenerate is None or best.configurations < 2:
        return None
    return (
        f"All {best.configurations} finished configurations have a degenerate seed (they rank "
        "below any without one): this sweep found no usable classifier."
    )


def _cost_unit(costs: Mapping[str, Any]) -> str:
    device = next(iter(costs.values())).device if costs else "GPU"
    return f"{device}-h"


def _cost_cell(costs: Mapping[str, Any], members: Sequence[TrialOutcome]) -> str:
    records = [costs[m.trial_id] for m in members if m.trial_id in costs]
    if not records:
        return " | n/a"
    hours = sum(record.device_seconds for record in records) / 3600.0
    retried = " (all attempts)" if any(record.attempts > 1 for record in records) else ""
    return f" | {hours:.4f}{retried}"


def table1_markdown(outcomes: Sequence[TrialOutcome], *, title: str) -> str:
    """Table-1 style summary: Sp, Se, Score (4-class and 2-class) as mean ± std [95 % interval]
    over seeds (over every seed x fold run of a fold-wise final, with a fold column)."""
    done = sorted(
        (o for o in outcomes if o.status == "done"), key=lambda o: (seed_of(o), fold_of(o) or 0)
    )
    has_folds = any(fold_of(o) is not None for o in outcomes)
    if has_folds:
        pairs = ", ".join(f"({seed_of(o)}, {fold_of(o)})" for o in done)
        finished = (
            f"{len(done)} of {len(outcomes)} runs finished (seed, fold: {pairs}); test metrics "
            "at the epoch the protocol selected; mean ± sample std [95 % Student-t interval of "
            "the mean] over these runs, percent (the mean over folds is in the Folds section)."
        )
    else:
        seeds = [seed_of(o) for o in done]
        finished = (
            f"{len(done)} of {len(outcomes)} seeds finished ({seeds}); test metrics at the "
            "epoch the protocol selected; mean ± sample std [95 % Student-t interval of the "
            "mean] over seeds, percent."
        )
    lines = [f"# {title}", "", finished, "", "| task | Sp | Se | Score |", "|---|---:|---:|---:|"]
    for label, specificity, sensitivity, score in TABLE1_ROWS:
        cells = [
            format_interval(
                mean_interval(
                    [float(o.last.get(key, math.nan)) for o in done], bounds=metric_range(key)
                )
            )
            for key in (specificity, sensitivity, score)
        ]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    fold_head, fold_rule = ("| fold ", "---:|") if has_folds else ("", "")
    lines += [
        "",
        f"| seed {fold_head}| Sp | Se | Score | Score 2-class |",
        f"|---:|{fold_rule}---:|---:|---:|---:|",
    ]
    for outcome in done:
        values = [
            outcome.last.get(key, math.nan)
            for key in (REPORT_SPECIFICITY, REPORT_SENSITIVITY, REPORT_SCORE, REPORT_SCORE_2CLASS)
        ]
        fold_cell = f"{fold_of(outcome)} | " if has_folds else ""
        numbers = " | ".join(format_number(v) for v in values)
        lines.append(f"| {outcome.resolved.seed} | {fold_cell}{numbers} |")
    flagged = degenerate_members(done)
    if flagged:
        lines.append(f"\n**Warning**: {flagged}; the means above include every finished seed.")
    failed = [o for o in outcomes if o.status != "done"]
    for outcome in failed:
        lines.append(f"\n{run_label(outcome)} failed: {outcome.error}")
    return "\n".join(lines) + "\n"


def mean_metric_name(key: str) -> str:
    """The final parent run's mean over seeds of a REPORT_* metric (see `table1_metrics`)."""
    return f"{key}_mean"


def table1_metrics(outcomes: Sequence[TrialOutcome]) -> dict[str, float]:
    """Mean, std and 95 % interval over seeds of each REPORT_* metric (logged on the final
    parent run; NaN std and interval for one seed)."""
    done = [o for o in outcomes if o.status == "done"]
    metrics: dict[str, float] = {}
    for _, *keys in TABLE1_ROWS:
        for key in keys:
            interval = mean_interval(
                [float(o.last.get(key, math.nan)) for o in done], bounds=metric_range(key)
            )
            metrics[mean_metric_name(key)] = interval.mean
            metrics[f"{key}_std"] = interval.std
            metrics[f"{key}_ci95_low"] = interval.low
            metrics[f"{key}_ci95_high"] = interval.high
    return metrics
