"""Reading a finished sweep: per-trial outcomes, the best configuration (mean over seeds under the
sweep's protocol), best_config.yaml export, markdown summaries, and the Table-1 style summary.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.config import ExperimentConfig, dump_config, write_text_atomic
from lungsrad.metrics import (
    EPOCH,
    REPORT_SCORE,
    REPORT_SCORE_2CLASS,
    REPORT_SENSITIVITY,
    REPORT_SENSITIVITY_2CLASS,
    REPORT_SPECIFICITY,
    REPORT_SPECIFICITY_2CLASS,
)
from tuning.search_space import ResolvedTrial, SearchSpace
from tuning.trainable import FAILURE_KEY, best_metric_name

BEST_CONFIG_FILE = "best_config.yaml"
SUMMARY_FILE = "summary.md"
TABLE1_ROWS = (
    ("4-class", REPORT_SPECIFICITY, REPORT_SENSITIVITY, REPORT_SCORE),
    ("2-class", REPORT_SPECIFICITY_2CLASS, REPORT_SENSITIVITY_2CLASS, REPORT_SCORE_2CLASS),
)


@dataclass(frozen=True)
class TrialOutcome:
    """One trial as the sweep ended it."""

    trial_id: str
    resolved: ResolvedTrial
    status: str  # "done" | "failed"
    epochs: int  # epochs reported
    best_value: float  # running best of the sweep metric (NaN: none)
    last: dict[str, Any]  # last reported metrics
    error: str | None = None

    @property
    def report_score(self) -> float:
        """The final answer's score (test metrics at the protocol's selected epoch)."""
        return float(self.last.get(REPORT_SCORE, math.nan))


@dataclass(frozen=True)
class BestChoice:
    """The winning configuration and the trials (one per seed) behind it."""

    members: tuple[TrialOutcome, ...]
    mean_value: float  # mean over seeds of the trials' best metric

    @property
    def config(self) -> ExperimentConfig:
        """Resolved config of the best configuration (its lowest-seed trial)."""
        return min(self.members, key=lambda t: t.resolved.seed).resolved.config

    @property
    def representative(self) -> TrialOutcome:
        """The lowest-seed trial of the configuration."""
        return min(self.members, key=lambda t: t.resolved.seed)


def collect_outcomes(result_grid: Any, space: SearchSpace) -> list[TrialOutcome]:
    """TrialOutcome per trial of a Tune ResultGrid, in trial order."""
    best_name = best_metric_name(space.metric)
    outcomes = []
    for result in result_grid:
        metrics = dict(result.metrics or {})
        # The folder is named by tuning.sweep's trial_dirname_creator ("trial_<id>"); a trial
        # that failed before reporting has no trial_id in its metrics.
        folder = Path(str(result.path)).name
        trial_id = folder.removeprefix("trial_") if folder.startswith("trial_") else None
        trial_id = str(trial_id or metrics.get("trial_id"))
        error = None
        if result.error is not None:
            error = (
                str(result.error).strip().splitlines()[0][:300] if str(result.error) else "error"
            )
        elif FAILURE_KEY in metrics:  # diverged, then stopped by the scheduler before raising
            error = str(metrics[FAILURE_KEY])
        outcomes.append(
            TrialOutcome(
                trial_id=trial_id,
                resolved=space.resolve(result.config),
                status="failed" if error is not None else "done",
                epochs=int(metrics.get(EPOCH, 0) or 0),
                best_value=float(metrics.get(best_name, math.nan)),
                last=metrics,
                error=error,
            )
        )
    return sorted(outcomes, key=lambda outcome: outcome.trial_id)


def choose_best(outcomes: Sequence[TrialOutcome], *, mode: str) -> BestChoice | None:
    """The configuration with the best mean (over seeds) of the sweep metric's running best.

    Under protocol 'paper' the metric is the test score of the best epoch; under 'validated' the
    validation score of the val-selected epoch, so no test number picks the winner. Failed
    trials and trials without a finite value are left out; ties go to the earlier trial.
    """
    groups: dict[str, list[TrialOutcome]] = {}
    for outcome in outcomes:
        if outcome.status == "done" and math.isfinite(outcome.best_value):
            groups.setdefault(outcome.resolved.group_key(), []).append(outcome)
    best: BestChoice | None = None
    sign = 1.0 if mode == "max" else -1.0
    for members in groups.values():
        mean = statistics.fmean(member.best_value for member in members)
        if best is None or sign * (mean - best.mean_value) > 0:
            best = BestChoice(members=tuple(members), mean_value=mean)
    return best


def write_unique_text(path: Path, text: str) -> Path:
    """Writes `text` to `path` atomically; never replaces a different existing file.

    Returns the path written: `path` itself when absent or already holding `text`, else the
    first free `stem-2.suffix`, `stem-3.suffix`, ...
    """
    candidate = path
    number = 1
    while candidate.exists():
        if candidate.read_text(encoding="utf-8") == text:
            return candidate
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    write_text_atomic(candidate, text)
    return candidate


def export_best_config(best: BestChoice, folder: Path, *, header: str) -> Path:
    """Writes best_config.yaml (complete resolved config, with a comment header) into `folder`."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return write_unique_text(folder / BEST_CONFIG_FILE, comment + dump_config(best.config))


def _number(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def format_mean_std(values: Sequence[float]) -> str:
    """'mean ± std' (percent values, two decimals)."""
    mean, std = mean_std(values)
    return f"{_number(mean)} ± {_number(std)}" if math.isfinite(mean) else "n/a"


def summary_markdown(
    space: SearchSpace, outcomes: Sequence[TrialOutcome], best: BestChoice | None
) -> str:
    """Markdown: sweep settings, one row per trial, and per-configuration means over seeds."""
    best_name = best_metric_name(space.metric)
    lines = [
        f"# Sweep `{space.name}`",
        "",
        f"search `{space.search}`, scheduler `{space.scheduler.kind}`, protocol "
        f"`{space.protocol}`, metric `{space.metric}` ({space.mode}), seeds {list(space.seeds)}",
        "",
    ]
    if best is not None:
        lines += [
            f"**Best configuration**: {best.representative.resolved.describe_config()} "
            f"(mean {best_name} {_number(best.mean_value)} over {len(best.members)} seed(s); "
            f"{REPORT_SCORE} {format_mean_std([m.report_score for m in best.members])})",
            "",
        ]
    lines += [
        f"| trial | configuration | status | epochs | {best_name} | {REPORT_SCORE} |",
        "|---|---|---|---:|---:|---:|",
    ]
    for outcome in outcomes:
        status = outcome.status if outcome.error is None else f"failed: {outcome.error}"
        lines.append(
            f"| {outcome.trial_id} | {outcome.resolved.describe()} | {status.replace('|', '/')} "
            f"| {outcome.epochs} | {_number(outcome.best_value)} "
            f"| {_number(outcome.report_score)} |"
        )
    if len(space.seeds) > 1:
        groups: dict[str, list[TrialOutcome]] = {}
        for outcome in outcomes:
            groups.setdefault(outcome.resolved.group_key(), []).append(outcome)
        lines += [
            "",
            f"| configuration | seeds done | {best_name} mean ± std | {REPORT_SCORE} mean ± std |",
            "|---|---:|---:|---:|",
        ]
        for members in groups.values():
            done = [m for m in members if m.status == "done"]
            lines.append(
                f"| {members[0].resolved.describe_config()} | {len(done)}/{len(members)} "
                f"| {format_mean_std([m.best_value for m in done])} "
                f"| {format_mean_std([m.report_score for m in done])} |"
            )
    return "\n".join(lines) + "\n"


def table1_markdown(outcomes: Sequence[TrialOutcome], *, title: str) -> str:
    """Table-1 style summary: Sp, Se, Score (4-class and 2-class) as mean ± std over seeds."""
    done = [o for o in outcomes if o.status == "done"]
    seeds = sorted(o.resolved.seed for o in done)
    lines = [
        f"# {title}",
        "",
        f"{len(done)} of {len(outcomes)} seeds finished ({seeds}); test metrics at the epoch "
        "the protocol selected; mean ± sample std over seeds, percent.",
        "",
        "| task | Sp | Se | Score |",
        "|---|---:|---:|---:|",
    ]
    for label, specificity, sensitivity, score in TABLE1_ROWS:
        cells = [
            format_mean_std([float(o.last.get(key, math.nan)) for o in done])
            for key in (specificity, sensitivity, score)
        ]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += ["", "| seed | Sp | Se | Score | Score 2-class |", "|---:|---:|---:|---:|---:|"]
    for outcome in sorted(done, key=lambda o: o.resolved.seed):
        values = [
            outcome.last.get(key, math.nan)
            for key in (REPORT_SPECIFICITY, REPORT_SENSITIVITY, REPORT_SCORE, REPORT_SCORE_2CLASS)
        ]
        lines.append(
            f"| {outcome.resolved.seed} | " + " | ".join(_number(v) for v in values) + " |"
        )
    failed = [o for o in outcomes if o.status != "done"]
    for outcome in failed:
        lines.append(f"\nseed {outcome.resolved.seed} failed: {outcome.error}")
    return "\n".join(lines) + "\n"


def table1_metrics(outcomes: Sequence[TrialOutcome]) -> dict[str, float]:
    """Mean and std over seeds of each REPORT_* metric (logged on the final parent run)."""
    done = [o for o in outcomes if o.status == "done"]
    metrics: dict[str, float] = {}
    for _, *keys in TABLE1_ROWS:
        for key in keys:
            mean, std = mean_std([float(o.last.get(key, math.nan)) for o in done])
            metrics[f"{key}_mean"] = mean
            metrics[f"{key}_std"] = std
    return metrics
