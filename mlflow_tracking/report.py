"""Report of a sweep from its MLflow runs, by search kind:
`python -m mlflow_tracking.report --experiment NAME [--tracking-uri URI] [--parent-run-id ID]`.

One-at-a-time sweeps (and grids over variants only) get Fig. 3-style curves: the score (default:
the reported test ICBHI Score) against each parameter's values, mean and spread over seeds, each
curve holding its own points plus the shared base point. Joint searches (TPE, grid, random) get
Optuna's analysis (mlflow_tracking.search_analysis): importance.csv, slice and contour plots.
Everything is written to --out and logged to the sweep's parent run under report/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungsrad.config import atomic_destination, write_text_atomic
from lungsrad.errors import USER_ERRORS, UserError
from lungsrad.metrics import (
    PERCENT_RANGE,
    REPORT_SCORE,
    REPORT_SENSITIVITY,
    REPORT_SPECIFICITY,
    metric_range,
)
from lungsrad.statistics import MeanInterval, format_interval, mean_interval
from mlflow_tracking.saved_view import stored_share_key, ui_hint
from mlflow_tracking.store import open_existing_store
from mlflow_tracking.tags import (
    PARENT_RUN_TAG,
    TAG_BASE_VALUES,
    TAG_ROLE,
    TAG_SEED,
    TAG_SWEEP,
    TAG_SWEEP_ID,
    TAG_TRIAL_ID,
    TAG_VALUES,
    TAG_VARIANT,
)
from mlflow_tracking.uri import normalize_tracking_uri, redact_text, redact_uri

EXIT_BAD_INPUT = 2
VARIANT_PARAMETER = "variant"
BASE = "base"
REPORT_FOLDER = "report"
DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
# A plot title wraps at this many characters: at fontsize 9 a 5.2-inch figure holds about 70.
TITLE_CHARACTERS_PER_LINE = 64


@dataclass(frozen=True)
class TrialPoint:
    """One finished child run as the report sees it."""

    run_id: str
    values: dict[str, str]  # swept parameter -> value label ({} for the base point)
    variant: str
    seed: int | None
    metrics: dict[str, float]
    config_name: str = ""  # the run config's `name` param
    trial_id: str = ""  # the Tune trial id (ties rank by it, as in summary.md)


@dataclass(frozen=True)
class Row:
    """Aggregate over seeds of one parameter value."""

    label: str
    count: int
    stats: dict[str, MeanInterval]  # metric -> mean, std, 95 % interval over seeds


@dataclass(frozen=True)
class Report:
    """What was written."""

    parent_run_id: str
    folder: Path
    plots: list[Path]
    table: Path
    markdown: str
    kind: str = "curves"  # curves | joint
    view_hint: str = ""  # how to open the sweep's saved view in the MLflow UI
    importance: Path | None = None  # joint: importance.csv
    configurations: list[Any] = field(default_factory=list)  # joint: search_analysis.Configuration


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def find_parent_run(client: Any, experiment_id: str, parent_run_id: str | None) -> Any:
    """The given parent run, else the experiment's latest sweep (or final) parent run."""
    if parent_run_id is not None:
        try:
            return client.get_run(parent_run_id)
        except Exception:
            raise UserError(
                f"parent run {parent_run_id} not found in the MLflow store "
                f"'{redact_uri(str(client.tracking_uri))}'; pass the --tracking-uri it was "
                "logged to"
            ) from None
    runs = [
        run
        for role in ("sweep", "final")
        for run in client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_ROLE}` = '{role}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    ]
    runs.sort(key=lambda run: run.info.start_time, reverse=True)
    if not runs:
        raise UserError(
            f"experiment {experiment_id} in '{redact_uri(str(client.tracking_uri))}' has no "
            "sweep or final parent run; pass --parent-run-id"
        )
    return runs[0]


def child_points(client: Any, experiment_id: str, parent_run_id: str) -> list[TrialPoint]:
    """Finished child runs of the parent (their final metrics)."""
    points = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            if run.info.status != "FINISHED":
                continue
            tags = run.data.tags
            seed = tags.get(TAG_SEED)
            points.append(
                TrialPoint(
                    run_id=run.info.run_id,
                    values=json.loads(tags.get(TAG_VALUES, "{}")),
                    variant=tags.get(TAG_VARIANT, BASE),
                    seed=int(seed) if seed is not None and seed.isdigit() else None,
                    metrics=dict(run.data.metrics),
                    config_name=run.data.params.get("name", ""),
                    trial_id=tags.get(TAG_TRIAL_ID, ""),
                )
            )
        token = page.token
        if not token:
            return points


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
    with atomic_destination(path) as tmp_path:
        figure.savefig(tmp_path, format="png")


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


def logged_search_space(client: Any, run_id: str) -> str | None:
    """The search-space YAML logged with a sweep (artifact search_space/*.yaml), or None."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="lungsrad_report_") as scratch:
            local = Path(client.download_artifacts(run_id, "search_space", scratch))
            files = sorted(local.glob("*.y*ml"))
            return files[0].read_text(encoding="utf-8") if files else None
    except Exception:  # no such artifact (an older sweep, a final run): domains are guessed
        return None


def _curves(
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


def build_report(
    client: Any,
    *,
    experiment_id: str,
    parent_run_id: str | None,
    out_dir: Path | None,
    metric: str = REPORT_SCORE,
    log_to_parent: bool = True,
) -> Report:
    """Writes the report of a sweep (curves or joint-search analysis, by its search kind) and
    logs it to the parent run under report/."""
    from mlflow_tracking.search_analysis import joint_report

    parent = find_parent_run(client, experiment_id, parent_run_id)
    run_id = parent.info.run_id
    params, tags = parent.data.params, parent.data.tags
    swept = json.loads(params.get("sweep.parameters", "[]"))
    variants = json.loads(params.get("sweep.variants", "[]"))
    search = params.get("sweep.search", "")
    one_at_a_time = search == "one_at_a_time"
    points = child_points(client, experiment_id, run_id)
    if not points:
        raise UserError(f"parent run {run_id} has no finished child runs to report on")
    sweep = tags.get(TAG_SWEEP, run_id)
    folder = out_dir or Path("runs") / "reports" / f"{tags.get(TAG_SWEEP, 'sweep')}-{run_id[:8]}"
    folder = folder.resolve()
    common = (
        f"parent run `{run_id}`, search `{search or 'unknown'}`, {len(points)} finished trials; "
        f"`{metric}` is the test metric at the epoch the protocol selected, in percent."
    )
    if swept and not one_at_a_time:
        analysis = joint_report(
            points,
            swept,
            folder,
            search_space_text=logged_search_space(client, run_id),
            sweep=sweep,
            metric=metric,
        )
        lines = [f"# Search report: {sweep}", "", common, *analysis.markdown]
        table = folder / "search_report.md"
        plots, importance, configurations = (
            analysis.plots,
            analysis.importance,
            analysis.configurations,
        )
        kind = "joint"
    else:
        parameters = ([VARIANT_PARAMETER] if len(variants) > 1 else []) + list(swept)
        curve_lines, plots = _curves(
            points,
            parameters or [VARIANT_PARAMETER],
            folder,
            base_labels=json.loads(tags.get(TAG_BASE_VALUES, "{}")),
            one_at_a_time=one_at_a_time,
            metric=metric,
            sweep=sweep,
        )
        lines = [
            f"# Sensitivity report: {sweep}",
            "",
            common + " Mean ± sample std [95 % Student-t interval] over seeds.",
            *curve_lines,
        ]
        table = folder / "sensitivity.md"
        importance, configurations, kind = None, [], "curves"
    markdown = "\n".join(lines) + "\n"
    write_text_atomic(table, markdown)
    if log_to_parent:
        client.log_artifacts(run_id, str(folder), REPORT_FOLDER)
    experiment = client.get_experiment(parent.info.experiment_id)
    share_key = stored_share_key(dict(experiment.tags or {}), tags.get(TAG_SWEEP_ID))
    return Report(
        parent_run_id=run_id,
        folder=folder,
        plots=plots,
        table=table,
        markdown=markdown,
        kind=kind,
        importance=importance,
        configurations=configurations,
        view_hint=ui_hint(redact_uri(client.tracking_uri), parent.info.experiment_id, share_key),
    )


def add_tracking_uri_argument(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri of the commands that read finished runs."""
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})",
    )


def user_error(error: BaseException, uri: str) -> int:
    """Prints a user error in one line (credentials of `uri` hidden); the exit status 2."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"error: {redact_text(message, uri)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def tracking_uri_from(flag: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the local default store."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def build_parser() -> argparse.ArgumentParser:
    """The report argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m mlflow_tracking.report",
        description="Report of a sweep from MLflow: Fig. 3-style curves (one-at-a-time) or "
        "parameter importance, slice and contour plots (joint searches).",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment of the sweep")
    add_tracking_uri_argument(parser)
    parser.add_argument("--parent-run-id", default=None, help="sweep parent run (default: latest)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--metric", default=REPORT_SCORE, help=f"metric to plot ({REPORT_SCORE})")
    parser.add_argument(
        "--no-log", action="store_true", help="do not log the report to the parent run"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m mlflow_tracking.report`."""
    args = build_parser().parse_args(argv)
    raw_uri = tracking_uri_from(args.tracking_uri)
    try:
        uri = normalize_tracking_uri(raw_uri)
        client = open_existing_store(uri)
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            raise UserError(f"no MLflow experiment '{args.experiment}' at '{redact_uri(uri)}'")
        report = build_report(
            client,
            experiment_id=experiment.experiment_id,
            parent_run_id=args.parent_run_id,
            out_dir=args.out,
            metric=args.metric,
            log_to_parent=not args.no_log,
        )
    except USER_ERRORS as error:
        return user_error(error, raw_uri)
    print(report.markdown)
    logged = "" if args.no_log else f"; logged to parent run {report.parent_run_id}"
    print(f"report: {report.table} ({len(report.plots)} plots){logged}")
    print(f"  view: {report.view_hint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
