"""Report of a sweep from its MLflow runs, by search kind:
`python -m mlflow_tracking.report --experiment NAME [--tracking-uri URI] [--parent-run-id ID]`.

One-at-a-time sweeps (and grids over variants only) get Fig. 3-style curves
(mlflow_tracking.sensitivity): the score (default: the reported test ICBHI Score) against each
parameter's values, mean and spread over seeds, each curve holding its own points plus the shared
base point. Joint searches (TPE, grid, random) get Optuna's analysis
(mlflow_tracking.search_analysis): importance.csv, slice and contour plots; a multi-objective
sweep's report adds its Pareto front (mlflow_tracking.pareto: table and pareto_front.png).
Everything is written to --out and logged to the sweep's parent run under report/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lungsrad.errors import UserError, run_cli
from lungsrad.files import write_text_atomic
from lungsrad.metrics import REPORT_SCORE
from mlflow_tracking.pareto import (
    Bound,
    Objective,
    candidates_of_points,
    pareto_front,
    recorded_objectives,
    write_pareto_report,
)
from mlflow_tracking.saved_view import stored_share_key, ui_hint
from mlflow_tracking.seeded_trials import seeded_lines, seeded_record
from mlflow_tracking.sensitivity import VARIANT_PARAMETER, curve_sections
from mlflow_tracking.store import open_existing_store
from mlflow_tracking.sweep_runs import TrialPoint, child_points, find_parent_run
from mlflow_tracking.tags import TAG_BASE_VALUES, TAG_SWEEP, TAG_SWEEP_ID
from mlflow_tracking.uri import normalize_tracking_uri, redact_text, redact_uri

REPORT_FOLDER = "report"
DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"


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


@dataclass(frozen=True)
class _Section:
    """The body of a report: its markdown lines, the file they go to, and what it wrote."""

    lines: list[str]
    table: Path
    plots: list[Path]
    kind: str  # curves | joint
    importance: Path | None = None
    configurations: list[Any] = field(default_factory=list)


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
        section = _joint_section(
            points,
            swept,
            folder,
            search_space_text=logged_search_space(client, run_id),
            sweep=sweep,
            metric=metric,
            common=common,
        )
    else:
        parameters = ([VARIANT_PARAMETER] if len(variants) > 1 else []) + list(swept)
        section = _curves_section(
            points,
            parameters or [VARIANT_PARAMETER],
            folder,
            base_labels=json.loads(tags.get(TAG_BASE_VALUES, "{}")),
            one_at_a_time=one_at_a_time,
            sweep=sweep,
            metric=metric,
            common=common,
        )
    objectives, bounds = recorded_objectives(params)
    if len(objectives) > 1:  # a multi-objective sweep: its Pareto front too
        section = _with_pareto(section, points, objectives, bounds, folder=folder, sweep=sweep)
    seeded = seeded_record(client, run_id)
    if seeded is not None:
        section.lines.extend(seeded_lines(seeded, objective=str(seeded.get("objective", ""))))
    markdown = "\n".join(section.lines) + "\n"
    write_text_atomic(section.table, markdown)
    if log_to_parent:
        client.log_artifacts(run_id, str(folder), REPORT_FOLDER)
    experiment = client.get_experiment(parent.info.experiment_id)
    share_key = stored_share_key(dict(experiment.tags or {}), tags.get(TAG_SWEEP_ID))
    return Report(
        parent_run_id=run_id,
        folder=folder,
        plots=section.plots,
        table=section.table,
        markdown=markdown,
        kind=section.kind,
        importance=section.importance,
        configurations=section.configurations,
        view_hint=ui_hint(redact_uri(client.tracking_uri), parent.info.experiment_id, share_key),
    )


def _joint_section(
    points: Sequence[TrialPoint],
    swept: Sequence[str],
    folder: Path,
    *,
    search_space_text: str | None,
    sweep: str,
    metric: str,
    common: str,
) -> _Section:
    """Optuna's analysis of a joint search (importance, slices, contour): search_report.md."""
    from mlflow_tracking.search_analysis import joint_report

    analysis = joint_report(
        points,
        swept,
        folder,
        search_space_text=search_space_text,
        sweep=sweep,
        metric=metric,
    )
    return _Section(
        lines=[f"# Search report: {sweep}", "", common, *analysis.markdown],
        table=folder / "search_report.md",
        plots=analysis.plots,
        kind="joint",
        importance=analysis.importance,
        configurations=analysis.configurations,
    )


def _curves_section(
    points: Sequence[TrialPoint],
    parameters: Sequence[str],
    folder: Path,
    *,
    base_labels: Mapping[str, str],
    one_at_a_time: bool,
    sweep: str,
    metric: str,
    common: str,
) -> _Section:
    """Fig. 3-style curves of a one-at-a-time sweep (or of variants): sensitivity.md."""
    curve_lines, plots = curve_sections(
        points,
        parameters,
        folder,
        base_labels=base_labels,
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
    return _Section(lines=lines, table=folder / "sensitivity.md", plots=plots, kind="curves")


def _with_pareto(
    section: _Section,
    points: Sequence[TrialPoint],
    objectives: Sequence[Objective],
    bounds: Sequence[Bound],
    *,
    folder: Path,
    sweep: str,
) -> _Section:
    """The section with the Pareto front of the configurations (mlflow_tracking.pareto) and
    its plot."""
    names = list(dict.fromkeys([o.name for o in objectives] + [b.name for b in bounds]))
    front = pareto_front(candidates_of_points(points, names), objectives, bounds)
    lines, plot = write_pareto_report(
        front, folder, title=f"{sweep}: Pareto front of {len(front.candidates)} configurations"
    )
    return dataclasses.replace(
        section, lines=[*section.lines, "", *lines], plots=[*section.plots, plot]
    )


def add_tracking_uri_argument(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri of the commands that read finished runs."""
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})",
    )


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

    def body() -> int:
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
        print(report.markdown)
        logged = "" if args.no_log else f"; logged to parent run {report.parent_run_id}"
        print(f"report: {report.table} ({len(report.plots)} plots){logged}")
        print(f"  view: {report.view_hint}")
        return 0

    return run_cli(body, redact=lambda text: redact_text(text, raw_uri))


if __name__ == "__main__":
    sys.exit(main())
