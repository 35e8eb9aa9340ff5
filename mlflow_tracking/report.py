"""Fig. 3-style sensitivity report of a sweep from its MLflow runs:
`python -m mlflow_tracking.report --experiment NAME [--tracking-uri URI] [--parent-run-id ID]`.

For each swept parameter: the score (default: the reported test ICBHI Score) against the
parameter's values, mean and standard deviation over seeds, as PNG plots and a markdown table,
written to --out and logged to the sweep's parent run. For a one-at-a-time sweep each parameter's
curve holds its own points plus the shared base point, as in the paper's Fig. 3.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.config import atomic_destination, write_text_atomic
from lungsrad.errors import USER_ERRORS, UserError
from lungsrad.metrics import REPORT_SCORE, REPORT_SENSITIVITY, REPORT_SPECIFICITY
from mlflow_tracking.tracker import (
    PARENT_RUN_TAG,
    TAG_BASE_VALUES,
    TAG_ROLE,
    TAG_SEED,
    TAG_SWEEP,
    TAG_VALUES,
    TAG_VARIANT,
    make_client,
    normalize_tracking_uri,
    redact_text,
    redact_uri,
)

EXIT_BAD_INPUT = 2
VARIANT_PARAMETER = "variant"
BASE = "base"
REPORT_FOLDER = "report"


@dataclass(frozen=True)
class TrialPoint:
    """One finished child run as the report sees it."""

    run_id: str
    values: dict[str, str]  # swept parameter -> value label ({} for the base point)
    variant: str
    seed: int | None
    metrics: dict[str, float]


@dataclass(frozen=True)
class Row:
    """Aggregate over seeds of one parameter value."""

    label: str
    count: int
    mean: dict[str, float]  # metric -> mean over seeds
    std: dict[str, float]  # metric -> sample std over seeds (0 for one seed)


@dataclass(frozen=True)
class Report:
    """What was written."""

    parent_run_id: str
    folder: Path
    plots: list[Path]
    table: Path
    markdown: str


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
            raise UserError(f"parent run {parent_run_id} not found") from None
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
        raise UserError("the experiment has no sweep parent run; pass --parent-run-id")
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
        else:
            label = point.values.get(parameter)
            if label is None:
                continue
        series.setdefault(label, []).append(point)
    return series


def aggregate(series: Mapping[str, list[TrialPoint]], metrics: Sequence[str]) -> list[Row]:
    """Mean and std over seeds per label, ordered numerically when every label is a number."""
    rows = []
    for label, members in series.items():
        mean: dict[str, float] = {}
        std: dict[str, float] = {}
        for metric in metrics:
            values = [
                m.metrics[metric] for m in members if math.isfinite(m.metrics.get(metric, math.nan))
            ]
            mean[metric] = statistics.fmean(values) if values else math.nan
            std[metric] = (
                statistics.stdev(values) if len(values) > 1 else (0.0 if values else math.nan)
            )
        rows.append(Row(label=label, count=len(members), mean=mean, std=std))
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
) -> None:
    """Score vs value: mean with std error bars, single seeds as dots, the base value marked."""
    from matplotlib.figure import Figure

    numeric = all(_number(row.label) is not None for row in rows)
    positions = [(_number(row.label) if numeric else index) for index, row in enumerate(rows)]
    figure = Figure(figsize=(4.8, 3.6), dpi=120)
    axes = figure.subplots()
    axes.errorbar(
        positions,
        [row.mean[metric] for row in rows],
        yerr=[row.std[metric] for row in rows],
        marker="o",
        capsize=4,
        label="mean ± std over seeds",
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
    axes.set_xlabel(parameter)
    axes.set_ylabel(metric)
    axes.legend(fontsize=7)
    figure.tight_layout()
    with atomic_destination(path) as tmp_path:
        figure.savefig(tmp_path, format="png")


def _cell(row: Row, metric: str) -> str:
    mean, std = row.mean.get(metric, math.nan), row.std.get(metric, math.nan)
    return f"{mean:.2f} ± {std:.2f}" if math.isfinite(mean) else "n/a"


def _safe_name(parameter: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in parameter)


def build_report(
    client: Any,
    *,
    experiment_id: str,
    parent_run_id: str | None,
    out_dir: Path | None,
    metric: str = REPORT_SCORE,
    log_to_parent: bool = True,
) -> Report:
    """Writes the sensitivity plots and table of a sweep and logs them to its parent run."""
    parent = find_parent_run(client, experiment_id, parent_run_id)
    run_id = parent.info.run_id
    params, tags = parent.data.params, parent.data.tags
    swept = json.loads(params.get("sweep.parameters", "[]"))
    variants = json.loads(params.get("sweep.variants", "[]"))
    one_at_a_time = params.get("sweep.search") == "one_at_a_time"
    base_labels = json.loads(tags.get(TAG_BASE_VALUES, "{}"))
    points = child_points(client, experiment_id, run_id)
    if not points:
        raise UserError(f"parent run {run_id} has no finished child runs to report on")
    parameters = ([VARIANT_PARAMETER] if len(variants) > 1 else []) + list(swept)
    if not parameters:
        parameters = [VARIANT_PARAMETER]
    folder = out_dir or Path("runs") / "reports" / f"{tags.get(TAG_SWEEP, 'sweep')}-{run_id[:8]}"
    folder = folder.resolve()
    metrics = [metric, REPORT_SPECIFICITY, REPORT_SENSITIVITY]
    lines = [
        f"# Sensitivity report: {tags.get(TAG_SWEEP, run_id)}",
        "",
        f"parent run `{run_id}`, {len(points)} finished trials; mean ± sample std over seeds "
        f"of `{metric}` (test metrics at the protocol's selected epoch).",
    ]
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
        plot_parameter(parameter, rows, series, plot_path, metric=metric, base_label=base_label)
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
    markdown = "\n".join(lines) + "\n"
    table = folder / "sensitivity.md"
    write_text_atomic(table, markdown)
    if log_to_parent:
        client.log_artifacts(run_id, str(folder), REPORT_FOLDER)
    return Report(parent_run_id=run_id, folder=folder, plots=plots, table=table, markdown=markdown)


def build_parser() -> argparse.ArgumentParser:
    """The report argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m mlflow_tracking.report",
        description="Fig. 3-style sensitivity plots and table of a sweep, from MLflow.",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment of the sweep")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)",
    )
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
    raw_uri = (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///runs/mlflow.db"
    )
    try:
        uri = normalize_tracking_uri(raw_uri)
        client = make_client(uri)
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
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"error: {redact_text(message, raw_uri)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report.markdown)
    logged = "" if args.no_log else f"; logged to parent run {report.parent_run_id}"
    print(f"report: {report.table} ({len(report.plots)} plots){logged}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
