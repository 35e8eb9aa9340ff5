"""The sweep's MLflow parent run: opened (or found again on --resume) with the space and its base
configs, marked KILLED with its unfinished trial runs on an interrupt, and given the summary,
best_config.yaml and the winner's metrics at the end.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from lungsrad.config import dump_config
from lungsrad.errors import UserError, first_line
from lungsrad.files import write_text_atomic
from mlflow_tracking.run_writer import RunTracker
from mlflow_tracking.store import TrackingTarget
from mlflow_tracking.tags import (
    NOT_DEGENERATE,
    RUN_DESCRIPTION_TAG,
    TAG_BASE_VALUES,
    TAG_DEGENERATE,
    TAG_GIT_COMMIT,
    TAG_METRIC,
    TAG_PROTOCOL,
    TAG_ROLE,
    TAG_SEARCH_SPACE,
    TAG_SWEEP,
    TAG_SWEEP_DIR,
    TAG_SWEEP_ID,
    TAG_TRIAL_STATUS,
)
from mlflow_tracking.uri import redact_text
from tuning.cost import COST_FOLDER, load_costs, resource_units, sweep_cost
from tuning.interrupts import SweepInterrupted
from tuning.paired import (
    PAIRED_FILE,
    points_against_base_markdown,
)
from tuning.pareto_export import export_pareto, insert_section, pareto_outcome, tie_break_header
from tuning.presentation import SweepOutcome, best_description, best_metrics, parent_run_name
from tuning.result_keys import best_metric_name
from tuning.results import (
    BEST_CONFIG_FILE,
    SUMMARY_FILE,
    choose_best,
    export_best_config,
    selection_record,
    summarize_configurations,
    summary_markdown,
)
from tuning.search_space import SearchSpace, space_summary
from tuning.settings import DriverSettings
from tuning.sweep_folder import STATE_FILE, SweepFolder, read_state
from tuning.sweep_tracking import SweepTracking

PARENT_RUN_WAIT_S = 60.0  # how long a starting driver retries a busy MLflow store
INTERRUPT_DELIVERY_S = 30.0  # how long an interrupted driver waits for MLflow


def open_parent_run(
    space: SearchSpace,
    settings: DriverSettings,
    target: TrackingTarget,
    folder: SweepFolder,
    commit: str,
) -> RunTracker:
    if folder.parent_run_id is not None:
        tracker = RunTracker(target, run_id=folder.parent_run_id)
        try:
            run = target.client().get_run(folder.parent_run_id)
        except Exception:
            raise UserError(
                f"--resume: the sweep's MLflow parent run {folder.parent_run_id} is not in "
                f"'{target.display_uri}' (experiment '{target.experiment_name}'); pass the "
                "--tracking-uri the sweep started with"
            ) from None
        if run.info.status != "RUNNING":
            target.client().update_run(folder.parent_run_id, status="RUNNING")
        return tracker
    tracker = RunTracker(
        target,
        run_name=parent_run_name(space, settings.role),
        tags={
            RUN_DESCRIPTION_TAG: f"{settings.role} '{space.name}' running; results in "
            f"{folder.path}",
            TAG_ROLE: settings.role,
            TAG_SWEEP: space.name,
            TAG_SWEEP_DIR: str(folder.path),
            TAG_SEARCH_SPACE: str(space.path),
            TAG_PROTOCOL: space.protocol,
            TAG_METRIC: space.metric,
            TAG_GIT_COMMIT: commit,
            TAG_BASE_VALUES: json.dumps(space.base_labels(), sort_keys=True),
            TAG_SWEEP_ID: folder.sweep_id,
        },
    )
    tracker.log_params(space_summary(space))
    tracker.log_text(space.text, f"search_space/{space.path.name}")
    for name, config in space.variants.items():
        tracker.log_text(dump_config(config), f"base_configs/{name}.yaml")
    # Several drivers starting at once may find a SQLite store busy for a moment.
    if not tracker.deliver(timeout_s=PARENT_RUN_WAIT_S):
        raise UserError(
            f"MLflow at '{target.display_uri}' did not accept the sweep's parent run "
            f"({tracker.last_error})"
        )
    return tracker


def record_interrupt(
    space: SearchSpace,
    folder: SweepFolder,
    target: TrackingTarget,
    parent: RunTracker,
    interrupted: SweepInterrupted,
    *,
    role: str,
    tracking: SweepTracking,
) -> None:
    """What an interrupted sweep leaves: its unfinished child runs and the parent run KILLED,
    sweep.json saying so (Tune saved its own state), no summary and no best_config.yaml."""
    interrupted.sweep_id = folder.sweep_id
    # The finished trials' FINISHED lands first.
    tracking.deliver_pending(timeout_s=INTERRUPT_DELIVERY_S)
    killed = _kill_running_children(target, str(parent.run_id))
    parent.set_tags(
        {
            RUN_DESCRIPTION_TAG: f"**Interrupted** by {interrupted.signal_name}: {killed} "
            f"unfinished trial run(s) KILLED; no best configuration exported. Continue with "
            f"`--resume {folder.sweep_id}`; results in {folder.path}",
        }
    )
    parent.finish("KILLED", timeout_s=INTERRUPT_DELIVERY_S)
    state = read_state(folder.path)
    state["interrupted"] = {
        "signal": interrupted.signal_name,
        "time": datetime.now().isoformat(timespec="seconds"),
        "killed_runs": killed,
    }
    write_text_atomic(folder.path / STATE_FILE, json.dumps(state, indent=1) + "\n")
    print(
        f"{role} '{space.name}' interrupted by {interrupted.signal_name}: "
        f"{killed} unfinished trial run(s) and the parent run {parent.run_id} marked KILLED in "
        f"MLflow; state saved in {folder.path}; no best_config.yaml or summary written",
        file=sys.stderr,
        flush=True,
    )


def _kill_running_children(target: TrackingTarget, parent_run_id: str) -> int:
    """Marks every RUNNING child run of the parent KILLED (trial status 'interrupted'); how many.
    --resume sets a continued trial's run RUNNING again."""
    client = target.client()
    try:
        runs = client.search_runs(
            [target.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
            "and attributes.status = 'RUNNING'",
        )
        for run in runs:
            client.set_tag(run.info.run_id, TAG_TRIAL_STATUS, "interrupted")
            client.set_terminated(run.info.run_id, status="KILLED")
    except Exception as error:  # MLflow down: the interrupt must still end cleanly
        reason = redact_text(first_line(error, empty=""), target.uri)
        print(
            f"warning: could not mark the trial runs KILLED in MLflow "
            f"({type(error).__name__}: {reason})",
            file=sys.stderr,
        )
        return 0
    return len(runs)


def export_outcome(
    space: SearchSpace,
    folder: SweepFolder,
    target: TrackingTarget,
    parent: RunTracker,
    outcomes: list[Any],
    *,
    role: str,
    started: float,
    export_best: bool,
    view_key: str | None = None,
) -> SweepOutcome:
    """Summary.md and (for sweeps) best_config.yaml of the trials' outcomes, on disk and on the
    parent run."""
    # Several objectives: the best is the Pareto point that wins the tie-break.
    pareto = pareto_outcome(space, outcomes) if space.is_multi_objective else None
    best = pareto.best if pareto is not None else choose_best(outcomes, mode=space.mode)
    costs = load_costs(folder.path / COST_FOLDER)
    cost = sweep_cost(
        costs,
        configurations=len(summarize_configurations(outcomes, mode=space.mode)),
        best_trial_ids=[member.trial_id for member in best.members] if best else [],
        wall_seconds=time.perf_counter() - started,
        device=resource_units(space.resources.as_dict())[0],
    )
    summary = summary_markdown(space, outcomes, best, costs=costs, cost=cost)
    if pareto is not None:
        section = export_pareto(
            space, folder.path, parent, pareto, target=target, export_configs=export_best
        )
        summary = insert_section(summary, section)
    summary_path = folder.path / SUMMARY_FILE
    write_text_atomic(summary_path, summary)
    parent.log_text(summary, SUMMARY_FILE)
    paired = points_against_base_markdown(space, outcomes)
    if paired:
        parent.log_text(paired, PAIRED_FILE)
    best_path = None
    if best is not None and export_best:
        note = tie_break_header(space) if pareto is not None else None
        best_path = _export_best(space, folder, parent, best, note=note)
    parent.set_tags({RUN_DESCRIPTION_TAG: best_description(space, best, outcomes, role)})
    if best is not None:
        parent.log_metrics(best_metrics(space, best), step=0)
        parent.set_tags(
            {
                "lungsrad.best_trial_id": best.representative.trial_id,
                TAG_DEGENERATE: best.degenerate or NOT_DEGENERATE,
            }
        )
    parent.log_metrics(cost.metrics(), step=0)
    done = sum(outcome.status == "done" for outcome in outcomes)
    parent.set_tags(
        {"lungsrad.trials_done": str(done), "lungsrad.trials_total": str(len(outcomes))}
    )
    if export_best:
        parent.finish("FINISHED" if best is not None else "FAILED")
    else:
        parent.flush(force=True)
    return SweepOutcome(
        folder=folder.path,
        tracking=target,
        parent_run_id=str(parent.run_id),
        outcomes=outcomes,
        best=best,
        best_config_path=best_path,
        summary_path=summary_path,
        seconds=time.perf_counter() - started,
        view_key=view_key,
        cost=cost,
        paired_table=paired,
    )


def _export_best(
    space: SearchSpace,
    folder: SweepFolder,
    parent: RunTracker,
    best: Any,
    *,
    note: str | None = None,
) -> Path:
    best_path = export_best_config(
        best,
        folder.path,
        header=(
            f"Best configuration of sweep '{space.name}' ({folder.path.name}): "
            f"{best.representative.resolved.describe_config()}\n"
            f"mean {best_metric_name(space.metric)} over {len(best.members)} seed(s): "
            f"{best.mean_value:.4f} (protocol {space.protocol}); MLflow parent run "
            f"{parent.run_id}\n" + (f"{note}\n" if note else "") + "Train it on several seeds: "
            "python tuning/final.py --config THIS_FILE --seeds 0 1 2 3 4"
        ),
        record={
            **selection_record(
                best, metric=best_metric_name(space.metric), reseeded=space.reseed is not None
            ),
            # final.py refuses this file without a checkpoint, as the sweep did.
            **({"requires_pretrained": True} if space.requires_pretrained else {}),
        },
    )
    parent.log_artifacts(_staged(best_path, folder.path / ".mlflow_best"))
    parent.set_tags({"lungsrad.best_config": str(best_path)})
    return best_path


def _staged(file: Path, folder: Path) -> Path:
    """A folder holding only `file` under the name best_config.yaml (for log_artifacts)."""

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy2(file, folder / BEST_CONFIG_FILE)
    return folder
