"""A one_at_a_time sweep's points against its base point, paired by seed: the differences, their
Student-t interval and a verdict, and the markdown table of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lungsrad.metrics import (
    REPORT_SCORE,
)
from lungsrad.statistics import (
    CONFIDENCE,
    MIN_INTERVAL_COUNT,
    PairedDifference,
    paired_difference,
)
from tuning.outcomes import TrialOutcome
from tuning.search_space import BASE_POINT, SearchSpace, display_label

PAIRED_FILE = "paired_against_base.md"  # one_at_a_time: each point against the base, by seed


@dataclass(frozen=True)
class PointAgainstBase:
    """One one_at_a_time point against the base point, paired by seed (point - base)."""

    name: str  # "parameter=value" (the value's label)
    difference: PairedDifference

    @property
    def verdict(self) -> str:
        """'matters' when the interval excludes 0, 'within noise' when it holds 0, and
        'too few seeds' below MIN_INTERVAL_COUNT paired seeds."""
        if not self.has_interval:
            return "too few seeds"
        return "within noise" if self.difference.verdict == "within noise" else "matters"

    @property
    def has_interval(self) -> bool:
        """At least MIN_INTERVAL_COUNT paired seeds (lungsrad.statistics' rule)."""
        return self.difference.interval.has_interval

    @property
    def interval_text(self) -> str:
        """'[low, high]', or 'n=K: no interval' with too few paired seeds."""
        if not self.has_interval:
            return f"n={len(self.difference.seeds)}: no interval"
        interval = self.difference.interval
        return f"[{_signed(interval.low)}, {_signed(interval.high)}]"


def points_against_base(
    space: SearchSpace, outcomes: Sequence[TrialOutcome], *, metric: str = REPORT_SCORE
) -> list[PointAgainstBase]:
    """Each point of a one_at_a_time sweep (in the space's order) against its base point, paired
    by seed on `metric` (default: the reported test Score); [] for other searches."""
    if space.search != "one_at_a_time" or space.has_variants:
        return []
    scores: dict[str, dict[int, float]] = {}
    for outcome in outcomes:
        values = outcome.resolved.values
        key = BASE_POINT if not values else _point_name(values)
        value = float(outcome.last.get(metric, math.nan)) if outcome.status == "done" else math.nan
        scores.setdefault(key, {})[outcome.resolved.seed] = value
    base = scores.get(BASE_POINT, {})
    names = []
    for point in space.points()[1:]:
        parameter = space.parameter(point["parameter"])
        names.append(_point_name({parameter.name: parameter.label(point["value"])}))
    return [
        PointAgainstBase(name=name, difference=paired_difference(base, scores.get(name, {})))
        for name in names
    ]


def _point_name(values: Mapping[str, str]) -> str:
    return " ".join(f"{name}={display_label(label)}" for name, label in values.items())


def _signed(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "n/a"


def points_against_base_markdown(
    space: SearchSpace, outcomes: Sequence[TrialOutcome], *, metric: str = REPORT_SCORE
) -> str:
    """Markdown table of `points_against_base` ("" when the sweep has none)."""
    rows = points_against_base(space, outcomes, metric=metric)
    if not rows:
        return ""
    percent = f"{CONFIDENCE:.0%}"
    lines = [
        "## Each point against the base config, paired by seed",
        "",
        f"`{metric}` of each point minus the base config's, on the seeds both finished; mean "
        f"difference with its {percent} Student-t interval. **matters**: the interval excludes "
        f"0; within noise: it holds 0; fewer than {MIN_INTERVAL_COUNT} paired seeds give no "
        "interval.",
        "",
        f"| point | paired seeds | per-seed differences | mean difference | {percent} interval "
        "| verdict |",
        "|---|---|---|---:|---:|---|",
    ]
    for row in rows:
        difference = row.difference
        verdict = "**matters**" if row.verdict == "matters" else row.verdict
        lines.append(
            f"| {row.name.replace('|', '/')} | {list(difference.seeds)} "
            f"| {', '.join(_signed(d) for d in difference.differences)} "
            f"| {_signed(difference.interval.mean)} | {row.interval_text} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
