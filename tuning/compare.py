"""Table 2 comparison: `python -m tuning.compare --experiment lungsrad-table2` pairs the variants of
a sweep (or of several final.py runs) by seed, and by (seed, fold) for finals trained over
RespireNet folds, and reports each ablation step's score difference with its 95 % interval (paired
t and paired bootstrap), saying when a step is within noise. The backbones sweep
(search_spaces/backbones.yaml) gets its named contrasts instead, headed by
"Lung-SRAD - AST patch-mix", the paper's claim over the AST baseline.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.errors import USER_ERRORS, UserError, report_user_error
from lungsrad.files import write_text_atomic
from lungsrad.metrics import REPORT_SCORE, metric_range
from lungsrad.statistics import (
    CONFIDENCE,
    PairedDifference,
    format_interval,
    mean_interval,
    paired_difference,
)
from mlflow_tracking.report import (
    add_tracking_uri_argument,
    child_points,
    find_parent_run,
    tracking_uri_from,
)
from mlflow_tracking.store import open_existing_store
from mlflow_tracking.sweep_runs import BASE
from mlflow_tracking.uri import normalize_tracking_uri, redact_text

COMPARISON_FILE = "table2_comparison.md"
# The order of the Lung-SRAD paper's Table 2 rows (search_spaces/table2.yaml).
TABLE2_ORDER = (
    "dass_finetune",
    "regularization",
    "ast_style_mix",
    "freq_mix",
    "time_mix",
    "lung_srad",
)
# The backbones sweep's variants (search_spaces/backbones.yaml) by the names the papers use, and
# its contrasts (minuend, subtrahend), the paper's headline first.
VARIANT_TITLES = {
    "dass_finetune": "DASS fine-tune",
    "lung_srad": "Lung-SRAD",
    "ast_finetune": "AST fine-tune",
    "ast_patchmix": "AST patch-mix",
}
BACKBONE_CONTRASTS = (
    ("lung_srad", "ast_patchmix"),  # "outperforming the AST baseline"
    ("lung_srad", "dass_finetune"),  # the method on DASS
    ("ast_patchmix", "ast_finetune"),  # Bae et al.'s method on AST
    ("dass_finetune", "ast_finetune"),  # the backbones alone, both fine-tuned
)
# The variants that make a comparison the backbones one (else the ablation chain of Table 2).
BACKBONE_VARIANTS = frozenset(("ast_finetune", "ast_patchmix"))
# final.py runs are named by their config's `name`: the shipped configs of the four variants.
VARIANT_ALIASES = {
    "table2_dass_finetune": "dass_finetune",
    "table2_lung_srad": "lung_srad",
    "table1_ast_finetune": "ast_finetune",
    "table1_ast_patchmix": "ast_patchmix",
}


def backbone_variants(scores: Mapping[str, Any]) -> dict[str, str]:
    """{backbones.yaml variant name: the label it has in `scores`} for those present, under
    its own name (a sweep's variant tag) or its config's name (final.py runs)."""
    found = {name: name for name in VARIANT_TITLES if name in scores}
    for alias, name in VARIANT_ALIASES.items():
        if alias in scores and name not in found:
            found[name] = alias
    return found


@dataclass(frozen=True)
class Step:
    """One comparison: `after` against `before`, paired by seed (difference = after - before)."""

    before: str
    after: str
    difference: PairedDifference
    label: str = ""  # how the row names it; "" for "before -> after"

    @property
    def name(self) -> str:
        """The row's name: the label, else "before -> after"."""
        return self.label or f"{self.before} -> {self.after}"


def ablation_steps(scores: Mapping[str, Mapping[Any, float]], order: Sequence[str]) -> list[Step]:
    """Each variant against the one before it in `order`, then the last against the first."""
    pairs = list(zip(order, order[1:], strict=False))
    if len(order) > 2:
        pairs.append((order[0], order[-1]))
    return [
        Step(before=a, after=b, difference=paired_difference(scores[a], scores[b]))
        for a, b in pairs
    ]


def contrast_steps(scores: Mapping[str, Mapping[Any, float]]) -> list[Step]:
    """The backbones contrasts whose two variants are both in `scores`, each named
    "<minuend> - <subtrahend>" by the variants' titles ("Lung-SRAD - AST patch-mix")."""
    present = backbone_variants(scores)
    return [
        Step(
            before=present[subtrahend],
            after=present[minuend],
            difference=paired_difference(scores[present[subtrahend]], scores[present[minuend]]),
            label=f"{VARIANT_TITLES[minuend]} - {VARIANT_TITLES[subtrahend]}",
        )
        for minuend, subtrahend in BACKBONE_CONTRASTS
        if minuend in present and subtrahend in present
    ]


def is_backbones_comparison(
    scores: Mapping[str, Any], requested_order: Sequence[str] | None
) -> bool:
    """True when no --order was given and an AST variant of backbones.yaml is among `scores`
    (by its variant name or its config's name)."""
    return not requested_order and bool(BACKBONE_VARIANTS & set(backbone_variants(scores)))


def _signed(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "n/a"


def comparison_markdown(
    scores: Mapping[str, Mapping[Any, float]],
    order: Sequence[str],
    *,
    metric: str,
    title: str,
    steps: Sequence[Step] | None = None,
) -> str:
    """Markdown: each variant's mean with its interval, then each step's paired difference.

    `steps` (e.g. `contrast_steps`) replaces the ablation chain `ablation_steps(scores, order)`.
    """
    percent = f"{CONFIDENCE:.0%}"
    bounds = metric_range(metric)
    chain = steps is None
    if steps is None:
        steps = ablation_steps(scores, order)
    lines = [
        f"# {title}",
        "",
        f"`{metric}` per variant over seeds: mean ± sample std [{percent} Student-t interval].",
        "",
        "| variant | seeds | score |",
        "|---|---|---:|",
    ]
    for name in order:
        seeds = sorted(seed for seed, value in scores[name].items() if math.isfinite(value))
        lines.append(
            f"| {name} | {seeds} "
            f"| {format_interval(mean_interval(list(scores[name].values()), bounds=bounds))} |"
        )
    what = (
        "Steps: the later variant minus the earlier"
        if chain
        else "Contrasts: the first named variant minus the second"
    )
    lines += [
        "",
        f"{what} on the same seeds (paired by seed, or by (seed, fold) for finals over "
        f"RespireNet folds); {percent} "
        "interval of the mean difference by Student t and by paired bootstrap (10000 "
        "resamples of the seeds). A step whose t interval contains 0 is **within noise**: these "
        "seeds cannot tell the two variants apart.",
        "",
        f"| {'step' if chain else 'contrast'} | paired seeds | per-seed differences "
        "| mean difference | t interval | bootstrap interval | verdict |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for step in steps:
        difference = step.difference
        interval = difference.interval
        no_interval = "n/a" if interval.count == 0 else f"n={interval.count}: no interval"
        t_cell = (
            f"[{_signed(interval.low)}, {_signed(interval.high)}]"
            if interval.has_interval
            else no_interval
        )
        boot_cell = (
            f"[{_signed(difference.bootstrap_low)}, {_signed(difference.bootstrap_high)}]"
            if interval.has_interval
            else no_interval
        )
        verdict = difference.verdict
        lines.append(
            f"| {step.name} | {list(difference.seeds)} "
            f"| {', '.join(_signed(d) for d in difference.differences)} "
            f"| {_signed(interval.mean)} | {t_cell} | {boot_cell} "
            f"| {'**within noise**' if verdict == 'within noise' else verdict} |"
        )
    return "\n".join(lines) + "\n"


def variant_label(point: Any) -> str:
    """A child run's variant: its variant tag, else (a final.py seed run) its config name."""
    if point.variant != BASE:
        return point.variant
    return point.config_name or BASE


FOLD_PARAMETER = "data.fold"


def pairing_key(point: Any) -> int | tuple[int, int]:
    """What pairs two variants' runs: the seed, or (seed, fold) for runs over RespireNet folds
    (the fold fixes the test patients, the seed the training noise)."""
    fold = point.values.get(FOLD_PARAMETER)
    return point.seed if fold is None else (point.seed, int(fold))


def _check_pairing(scores: Mapping[str, Mapping[Any, float]]) -> None:
    kinds = {name: isinstance(next(iter(v)), tuple) for name, v in scores.items() if v}
    if len(set(kinds.values())) > 1:
        with_folds = sorted(name for name, has in kinds.items() if has)
        without = sorted(name for name, has in kinds.items() if not has)
        raise UserError(
            f"variants {with_folds} were trained over folds and {without} were not; compare "
            "finals of the same protocol (tuning/final.py --folds for all or none)"
        )


def collect_scores(
    client: Any, sources: Sequence[tuple[str, str | None]], *, metric: str
) -> tuple[dict[str, dict[Any, float]], list[str]]:
    """{variant: {seed or (seed, fold): score}} of the finished child runs of each (experiment
    id, parent run id) source (parent None: the experiment's latest sweep or final), and the
    parent runs used."""
    scores: dict[str, dict[Any, float]] = {}
    used = []
    for experiment_id, requested in sources:
        parent = find_parent_run(client, experiment_id, requested)
        used.append(parent.info.run_id)
        for point in child_points(client, parent.info.experiment_id, parent.info.run_id):
            if point.seed is None:
                continue
            if set(point.values) - {FOLD_PARAMETER}:
                raise UserError(
                    f"parent run {parent.info.run_id} swept parameters {sorted(point.values)}; "
                    "compare variants of a grid over variants (table2.yaml) or final.py runs"
                )
            label = variant_label(point)
            key = pairing_key(point)
            if key in scores.get(label, {}):
                raise UserError(
                    f"variant '{label}' has seed {key} twice (in two of the parent "
                    "runs); pass --parent-run-id for one run per variant"
                )
            scores.setdefault(label, {})[key] = point.metrics.get(metric, math.nan)
    _check_pairing(scores)
    return scores, used


def find_sources(
    client: Any, experiments: Sequence[str], parent_run_ids: Sequence[str] | None
) -> list[tuple[str, str | None]]:
    """(experiment id, parent run id) pairs: the given parent runs, else each experiment's
    latest sweep or final parent run."""
    if parent_run_ids:
        return [
            (find_parent_run(client, "", run_id).info.experiment_id, run_id)
            for run_id in parent_run_ids
        ]
    sources: list[tuple[str, str | None]] = []
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise UserError(f"no MLflow experiment '{name}'")
        sources.append((experiment.experiment_id, None))
    return sources


def resolve_order(scores: Mapping[str, Any], requested: Sequence[str] | None) -> list[str]:
    """--order, else the Table 2 order of the known variants followed by the others (sorted;
    the backbones variants in the order of backbones.yaml)."""
    if requested:
        missing = [name for name in requested if name not in scores]
        if missing:
            raise UserError(
                f"--order names {missing}, not among the variants found: {sorted(scores)}"
            )
        return list(requested)
    known = [name for name in TABLE2_ORDER if name in scores]
    backbones = [label for label in backbone_variants(scores).values() if label not in known]
    listed = set(known) | set(backbones)
    return known + backbones + sorted(name for name in scores if name not in listed)


def build_parser() -> argparse.ArgumentParser:
    """The compare.py argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m tuning.compare",
        description="Pair variants by seed and report each step's difference with its interval.",
    )
    parser.add_argument(
        "--experiment",
        nargs="+",
        default=[],
        help="MLflow experiment(s): a Table 2 sweep, or one final.py experiment per variant",
    )
    add_tracking_uri_argument(parser)
    parser.add_argument(
        "--parent-run-id",
        nargs="+",
        default=None,
        help="sweep or final parent run(s) (default: the experiment's latest)",
    )
    parser.add_argument(
        "--order",
        nargs="+",
        default=None,
        help="variants in step order (also turns the backbones contrasts into a chain)",
    )
    parser.add_argument("--metric", default=REPORT_SCORE, help=f"score ({REPORT_SCORE})")
    parser.add_argument("--out", type=Path, default=None, help=f"folder for {COMPARISON_FILE}")
    parser.add_argument("--no-log", action="store_true", help="do not log to the parent run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of tuning/compare.py."""
    args = build_parser().parse_args(argv)
    raw_uri = tracking_uri_from(args.tracking_uri)
    try:
        uri = normalize_tracking_uri(raw_uri)
        client = open_existing_store(uri)
        if not args.experiment and not args.parent_run_id:
            raise UserError("give --experiment NAME [NAME ...] or --parent-run-id ID [ID ...]")
        sources = find_sources(client, args.experiment, args.parent_run_id)
        scores, parents = collect_scores(client, sources, metric=args.metric)
        if len(scores) < 2:
            raise UserError(
                f"found {len(scores)} variant(s) ({sorted(scores)}); a comparison needs two or more"
            )
        order = resolve_order(scores, args.order)
    except USER_ERRORS as error:  # the write below stays outside: its errors are bugs
        return report_user_error(error, redact=lambda text: redact_text(text, raw_uri))
    steps = contrast_steps(scores) if is_backbones_comparison(scores, args.order) else None
    markdown = comparison_markdown(
        scores, order, metric=args.metric, title=f"Comparison of {', '.join(order)}", steps=steps
    )
    folder = (args.out or Path("runs") / "reports" / f"compare-{parents[0][:8]}").resolve()
    write_text_atomic(folder / COMPARISON_FILE, markdown)
    print(markdown)
    print(f"comparison: {folder / COMPARISON_FILE}")
    if not args.no_log:
        client.log_text(parents[0], markdown, f"report/{COMPARISON_FILE}")
        print(f"logged to parent run {parents[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
