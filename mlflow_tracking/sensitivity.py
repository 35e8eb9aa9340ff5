"""Fig. 3-style curves of a one-at-a-time sweep (or a grid over variants only): the score against
each parameter's values, mean and 95 % interval over seeds, each curve holding its own points
plus the shared base point, as a PNG and a markdown table per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.files import save_figure
from lungsrad.metrics import PERCENT_RANGE, REPORT_SENSITIVITY, REPORT_SPECIFICITY, metric_range
from lungsrad.statistics import MeanInterval, format_interval, mean_interval
from mlflow_tracking.sweep_runs import BASE, TrialPoint

VARIANT_PARAMETER = "variant"
# A plot title wraps at this many characters: at fontsize 9 a 5.2-inch figure holds about 70.
TITLE_CHARACTERS_PER_LINE = 64


@dataclass(frozen=True)
class Row:
    """Aggregate over seeds of one parameter value."""

    label: str
    count: int
    stats: dict[str, MeanInterval]  # metric -> mean, std, 95 % interval over seeds


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parameter_series(
    points: Sequence[TrialPoint], parameter: str, *, base_label: str | None, one_at_a_time: bool
) -> dict[str, list[TrialPoint]]:
    """Points per value label of `parameter` (one-at-a-time: its own points + the base point)."""
    series: dict[str, list[TrialPoint]] = {}
    for point in points:
        if parameter == VARIANT_PARAMETER:
            label = point.variant
        elif one_at_a_time and not point.values:
            label = base_label or BASE
        elif one_at_a_time and set(point.values) != {parameter}:
            continue
        elif parameter in point.values:
            label = point.values[parameter]
        else:
            continue
        series.setdefault(label, []).append(point)
    return series


def aggregate(series: Mapping[str, list[TrialPoint]], metrics: Sequence[str]) -> list[Row]:
    """Mean, std and 95 % interval over seeds per label, ordered numerically when every label
    is a number."""
    rows = [
        Row(
            label=label,
            count=len(members),
            stats={
                metric: mean_interval(
                    [m.metrics.get(metric, math.nan) for m in members], bounds=metric_range(metric)
                )
                for metric in metrics
            },
        )
        for label, members in series.items()
    ]
    if all(_number(row.label) is not None for row in rows):
        rows.sort(key=lambda row: _number(row.label) or 0.0)
    return rows


def plot_parameter(
    parameter: str,
    rows: Sequence[Row],
    series: Mapping[str, list[TrialPoint]],
    path: Path,
    *,
    metric: str,
    base_label: str | None,
    title: str,
) -> None:
    """Writes `parameter_figure` as a PNG, atomically."""
    figure = parameter_figure(
        parameter, rows, series, metric=metric, base_label=base_label, title=title
    )
    save_figure(figure, path)


def parameter_figure(
    parameter: str,
    rows: Sequence[Row],
    series: Mapping[str, list[TrialPoint]],
    *,
    metric: str,
    base_label: str | None,
    title: str,
) -> Any:
    """Score vs value (a matplotlib Figure): mean with its 95 % interval over seeds (none below
    three seeds), every seed as a dot, the base value marked; the y axis keeps to the metric's
    range (0-100 for a score) and the title wraps instead of running off the figure."""
    import textwrap

    from matplotlib.figure import Figure

    numeric = all(_number(row.label) is not None for row in rows)
    positions = [
        float(_number(row.label) or 0.0) if numeric else float(index)
        for index, row in enumerate(rows)
    ]
    figure = Figure(figsize=(5.2, 3.8), dpi=120)
    axes = figure.subplots()
    stats = [row.stats[metric] for row in rows]
    means = [interval.mean for interval in stats]
    # Asymmetric: an interval clipped to the metric's range is no longer centred on the mean.
    below = [s.mean - s.low if s.has_interval else 0.0 for s in stats]
    above = [s.high - s.mean if s.has_interval else 0.0 for s in stats]
    has_spread = any(s.has_interval for s in stats)
    axes.errorbar(
        positions,
        means,
        yerr=[below, above] if has_spread else None,
        marker="o",
        capsize=4,
        label=("mean, 95 % interval over seeds (3 or more)" if has_spread else "mean over seeds"),
    )
    for position, row in zip(positions, rows, strict=True):
        seeds = [p.metrics.get(metric, math.nan) for p in series[row.label]]
        axes.scatter([position] * len(seeds), seeds, s=10, color="gray", alpha=0.6, zorder=3)
        if base_label is not None and row.label == base_label:
            axes.axvline(position, color="red", linestyle=":", linewidth=1, label="base config")
    if not numeric:
        axes.set_xticks(positions, labels=[row.label for row in rows], rotation=30, ha="right")
    elif len(positions) > 2 and min(positions) > 0 and max(positions) / min(positions) > 20:
        axes.set_xscale("log")
    axes.set_xlabel(f"{parameter} (log scale)" if axes.get_xscale() == "log" else parameter)
    bounds = metric_range(metric)
    axes.set_ylabel(f"{metric} (%)" if bounds == PERCENT_RANGE else metric)
    if bounds is not None:
        low, high = axes.get_ylim()
        axes.set_ylim(max(low, bounds[0]), min(high, bounds[1]))
    axes.set_title(textwrap.fill(title, width=TITLE_CHARACTERS_PER_LINE), fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _cell(row: Row, metric: str) -> str:
    return format_interval(row.stats[metric])


def _safe_name(parameter: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in parameter)


def curve_sections(
    points: Sequence[TrialPoint],
    parameters: Sequence[str],
    folder: Path,
    *,
    base_labels: Mapping[str, str],
    one_at_a_time: bool,
    metric: str,
    sweep: str,
) -> tuple[list[str], list[Path]]:
    """Fig. 3-style curves and tables, one per parameter (one-at-a-time sweeps, variants)."""
    metrics = [metric, REPORT_SPECIFICITY, REPORT_SENSITIVITY]
    lines: list[str] = []
    plots = []
    for parameter in parameters:
        base_label = base_labels.get(parameter)
        series = parameter_series(
            points, parameter, base_label=base_label, one_at_a_time=one_at_a_time
        )
        if not series:
            continue
        rows = aggregate(series, metrics)
        plot_path = folder / f"sensitivity_{_safe_name(parameter)}.png"
        others = "others at the base config" if one_at_a_time else "per variant"
        plot_parameter(
            parameter,
            rows,
            series,
            plot_path,
            metric=metric,
            base_label=base_label,
            title=f"{sweep}: {metric} vs {parameter} ({others})",
        )
        plots.append(plot_path)
        lines += [
            "",
            f"## {parameter}",
            "",
            f"![{parameter}]({plot_path.name})",
            "",
            f"| value | seeds | {metric} | Sp | Se |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in rows:
            marker = " (base)" if base_label is not None and row.label == base_label else ""
            lines.append(
                f"| {row.label}{marker} | {row.count} | {_cell(row, metric)} "
                f"| {_cell(row, REPORT_SPECIFICITY)} | {_cell(row, REPORT_SENSITIVITY)} |"
            )
    return lines, plots
