"""Final runs over seeds x RespireNet folds (`tuning/final.py --folds 0 1 2 3 4`): the fold
parameter of the final space, the mean over folds with its interval, and the per-device table
(Sp, Se, Score per recording device with intervals) of Table 1.

Over folds, each fold's score is first averaged over its seeds; the interval is then the Student-t
interval of the mean of the fold means (n = folds), the number 5-fold papers report. Without
folds the interval is over seeds, as in the rest of Table 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lungsrad.config import NUM_FOLDS
from lungsrad.data.layout import DEVICES
from lungsrad.errors import UserError
from lungsrad.metrics import (
    REPORT_PREFIX,
    REPORT_SCORE,
    REPORT_SCORE_2CLASS,
    REPORT_SENSITIVITY,
    REPORT_SPECIFICITY,
    SCORE,
    SENSITIVITY,
    SPECIFICITY,
    device_metric_name,
    metric_range,
)
from lungsrad.statistics import MeanInterval, format_interval, mean_interval
from tuning.results import TrialOutcome, fold_of
from tuning.search_space import Parameter, SearchSpace

FOLD_PATH = "data.fold"
OVERALL_ROWS = (
    ("Sp", REPORT_SPECIFICITY),
    ("Se", REPORT_SENSITIVITY),
    ("Score", REPORT_SCORE),
    ("Score 2-class", REPORT_SCORE_2CLASS),
)


def fold_parameter(folds: Sequence[int]) -> Parameter:
    """The grid over `data.fold` that final.py adds for --folds.

    Raises:
        UserError: folds repeated or outside 0..NUM_FOLDS-1.
    """
    if not folds or len(set(folds)) != len(folds) or any(not 0 <= f < NUM_FOLDS for f in folds):
        raise UserError(f"--folds must be distinct folds in 0..{NUM_FOLDS - 1}, got {list(folds)}")
    return Parameter(
        name=FOLD_PATH,
        kind="grid",
        values=tuple(folds),
        labels=tuple(str(fold) for fold in folds),
    )


def _done(outcomes: Sequence[TrialOutcome]) -> list[TrialOutcome]:
    return [o for o in outcomes if o.status == "done"]


def _value(outcome: TrialOutcome, key: str) -> float:
    return float(outcome.last.get(key, math.nan))


def _folds(done: Sequence[TrialOutcome]) -> list[int]:
    """The folds of the runs, in order (none: runs without folds)."""
    return sorted({fold for fold in map(fold_of, done) if fold is not None})


def aggregate(outcomes: Sequence[TrialOutcome], key: str) -> MeanInterval:
    """`key` over the finished runs: over fold means (each over its seeds) when the runs have
    folds, else over seeds. A run without the metric (e.g. a device absent from its test split)
    is left out, never counted as 0."""
    done = _done(outcomes)
    bounds = metric_range(key)
    folds = _folds(done)
    if not folds:
        return mean_interval([_value(o, key) for o in done], bounds=bounds)
    fold_means = [
        mean_interval([_value(o, key) for o in done if fold_of(o) == fold]).mean for fold in folds
    ]
    return mean_interval(fold_means, bounds=bounds)


def folds_markdown(outcomes: Sequence[TrialOutcome]) -> str:
    """Per fold (mean over its seeds) and the mean over folds with its interval; '' without
    folds."""
    done = _done(outcomes)
    folds = _folds(done)
    if not folds:
        return ""
    header = " | ".join(label for label, _ in OVERALL_ROWS)
    lines = [
        "",
        "## Folds",
        "",
        "Each fold: mean ± std [95 % interval] over its seeds. **Mean over folds**: the mean of "
        f"the fold means ± their std [95 % Student-t interval over {len(folds)} folds].",
        "",
        f"| fold | seeds | {header} |",
        "|---:|---|" + "---:|" * len(OVERALL_ROWS),
    ]
    for fold in folds:
        members = [o for o in done if fold_of(o) == fold]
        seeds = sorted(o.resolved.seed for o in members)
        cells = [
            format_interval(
                mean_interval([_value(o, key) for o in members], bounds=metric_range(key))
            )
            for _, key in OVERALL_ROWS
        ]
        lines.append(f"| {fold} | {seeds} | {' | '.join(cells)} |")
    cells = [format_interval(aggregate(done, key)) for _, key in OVERALL_ROWS]
    lines.append(f"| **mean over folds** | | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def devices_in(outcomes: Sequence[TrialOutcome]) -> list[str]:
    """The devices with a reported score in any finished run (ICBHI order, then others)."""
    prefix = f"{REPORT_PREFIX}/device/"
    found = {
        key[len(prefix) :].split("/", 1)[0]
        for o in _done(outcomes)
        for key in o.last
        if key.startswith(prefix)
    }
    return [d for d in DEVICES if d in found] + sorted(found - set(DEVICES))


def device_markdown(outcomes: Sequence[TrialOutcome]) -> str:
    """Table 1 per recording device: Sp, Se, Score with their intervals (over seeds, or over
    fold means with --folds); a device no run tested on has no row."""
    done = _done(outcomes)
    devices = devices_in(done)
    if not devices:
        return ""
    over = "fold means" if any(fold_of(o) is not None for o in done) else "seeds"
    lines = [
        "",
        "## Per recording device",
        "",
        f"Test metrics at the selected epoch per stethoscope; mean ± std [95 % interval] over "
        f"{over}; runs without test cycles of a device are left out of its row.",
        "",
        "| device | runs | Sp | Se | Score |",
        "|---|---:|---:|---:|---:|",
    ]
    for device in devices:
        keys = [device_metric_name(REPORT_PREFIX, device, k) for k in (SPECIFICITY, SENSITIVITY)]
        score_key = device_metric_name(REPORT_PREFIX, device, SCORE)
        runs = sum(math.isfinite(_value(o, score_key)) for o in done)
        cells = [format_interval(aggregate(done, key)) for key in (*keys, score_key)]
        lines.append(f"| {device} | {runs} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def fold_and_device_metrics(outcomes: Sequence[TrialOutcome]) -> dict[str, float]:
    """Parent-run metrics: `<key>_mean`, `_std`, `_ci95_low`, `_ci95_high` of each device's
    Sp/Se/Score, and `<report key>_over_folds_*` of the overall metrics when there are folds."""
    done = _done(outcomes)
    metrics: dict[str, float] = {}
    for device in devices_in(done):
        for key in (SPECIFICITY, SENSITIVITY, SCORE):
            name = device_metric_name(REPORT_PREFIX, device, key)
            metrics.update(_interval_metrics(name, aggregate(done, name)))
    if any(fold_of(o) is not None for o in done):
        for _, key in OVERALL_ROWS:
            metrics.update(_interval_metrics(f"{key}_over_folds", aggregate(done, key)))
    return metrics


def _interval_metrics(name: str, interval: MeanInterval) -> dict[str, float]:
    return {
        f"{name}_mean": interval.mean,
        f"{name}_std": interval.std,
        f"{name}_ci95_low": interval.low,
        f"{name}_ci95_high": interval.high,
    }


def check_splits(space: SearchSpace, feature_set: Any) -> None:
    """Builds every split the sweep's trials will use (each variant, each swept fold) from the
    shared features, so that patients missing from the fold list or a fold without test cycles
    fail in the driver, in one line, before any trial trains. No-op without shared features."""
    from lungsrad.data.loaders import split_indices

    if feature_set is None:
        return
    swept_folds: tuple[Any, ...] = ()
    for parameter in space.parameters:
        if parameter.name == FOLD_PATH and parameter.is_discrete:
            swept_folds = parameter.values
    for config in space.variants.values():
        for fold in swept_folds or (config.data.fold,):
            split_indices(
                feature_set,
                protocol=config.train.protocol,
                validation_fraction=config.data.validation_fraction,
                seed=config.data.split_seed,
                fold=fold,
            )
