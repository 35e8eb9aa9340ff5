"""The trials a warm-started sweep was seeded with (issue 27): the record its parent run holds
(artifact warm_start.json, written by tuning.warm_start) and the report's section listing them,
marked "seeded from <sweep>" (they are not child runs of the sweep).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from mlflow_tracking.values import display_value

WARM_START_ARTIFACT = "warm_start.json"


def seeded_record(client: Any, run_id: str) -> dict[str, Any] | None:
    """The parent run's warm-start record, None for a sweep that was not warm-started."""
    try:
        with tempfile.TemporaryDirectory(prefix="lungsrad_seeded_") as scratch:
            local = Path(client.download_artifacts(run_id, WARM_START_ARTIFACT, scratch))
            return dict(json.loads(local.read_text(encoding="utf-8")))
    except Exception:  # no such artifact: the sweep started from nothing
        return None


def seeded_lines(record: dict[str, Any], *, objective: str) -> list[str]:
    """Markdown: one table row per seeded trial (its earlier run, values and objective)."""
    trials = record.get("trials", [])
    names = sorted({name for trial in trials for name in trial.get("values", {})})
    lines = [
        "",
        f"## Seeded from {record.get('sweep', '?')}",
        "",
        f"{len(trials)} finished trial(s) of sweep '{record.get('sweep', '?')}' (sweep id "
        f"{record.get('sweep_id', '?')}, parent run `{record.get('parent_run_id', '?')}`) seeded "
        "this sweep's Optuna study: TPE used them, they were not run again and are not child "
        f"runs of this sweep; {record.get('left_out', 0)} left out (outside this space).",
        "",
        "| source | earlier run | " + " | ".join(names) + f" | {objective} |",
        "|---|---|" + "---|" * len(names) + "---:|",
    ]
    for trial in sorted(trials, key=lambda item: -float(item.get("value", 0.0))):
        values = [display_value(trial.get("values", {}).get(name, "")) for name in names]
        lines.append(
            f"| seeded from {record.get('sweep', '?')} | `{trial.get('run_id', '')}` | "
            + " | ".join(values)
            + f" | {float(trial.get('value', float('nan'))):.2f} |"
        )
    return lines
