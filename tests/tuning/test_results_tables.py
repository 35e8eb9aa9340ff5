"""Sweep summaries and Table 1 on fixed scores: configurations best first with hand-computed 95 %
intervals, one seed shown as such (never "± 0.00"), and the selection record of best_config.yaml."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from lungsrad.config import ExperimentConfig, apply_overrides, load_config
from lungsrad.metrics import (
    REPORT_SCORE,
    REPORT_SCORE_2CLASS,
    REPORT_SENSITIVITY,
    REPORT_SPECIFICITY,
)
from tuning.results import (
    TrialOutcome,
    choose_best,
    export_best_config,
    read_selection_record,
    selection_record,
    summarize_configurations,
    table1_markdown,
    table1_metrics,
)
from tuning.search_space import ResolvedTrial


def outcome(trial_id: str, alpha: str, seed: int, value: float, **last: float) -> TrialOutcome:
    config = apply_overrides(ExperimentConfig(), {"train.seed": seed})
    return TrialOutcome(
        trial_id=trial_id,
        resolved=ResolvedTrial(
            config=config,
            variant="base",
            values={"method.patch_mix.alpha": alpha},
            seed=seed,
            overrides={},
        ),
        status="done" if math.isfinite(value) else "failed",
        epochs=2,
        best_value=value,
        last={REPORT_SCORE: value - 1.0, **last},
    )


OUTCOMES = [
    outcome("a0", "0.5", 0, 60.0),
    outcome("b0", "1", 0, 63.0),  # best single trial, but its other seeds are worse
    outcome("b1", "1", 1, 59.0),
    outcome("b2", "1", 2, 57.0),
    outcome("c0", "2", 0, 61.0),
    outcome("c1", "2", 1, 62.0),
    outcome("c2", "2", 2, 63.0),
    outcome("d0", "5", 0, math.nan),
]


def test_configurations_best_mean_first_with_intervals() -> None:
    ranked = summarize_configurations(OUTCOMES, mode="max")
    assert [s.description for s in ranked] == [
        "method.patch_mix.alpha=2",  # mean 62 beats the best single trial's configuration (60)
        "method.patch_mix.alpha=0.5",
        "method.patch_mix.alpha=1",
        "method.patch_mix.alpha=5",  # no finished seed: last
    ]
    # 61, 62, 63: s = 1, half = 4.302653 / sqrt(3) = 2.48414
    assert (ranked[0].selection.low, ranked[0].selection.high) == pytest.approx(
        (59.51586, 64.48414), abs=1e-4
    )
    best = choose_best(OUTCOMES, mode="max")
    assert best is not None and best.seed_scores == {0: 61.0, 1: 62.0, 2: 63.0}
    assert choose_best(OUTCOMES, mode="min").seed_scores == {0: 63.0, 1: 59.0, 2: 57.0}


def test_best_config_records_its_seeds(tmp_path: Path) -> None:
    best = choose_best(OUTCOMES, mode="max")
    record = selection_record(best, metric="best/selection/icbhi_score", reseeded=True)
    path = export_best_config(best, tmp_path, header="title", record=record)
    assert read_selection_record(path) == {
        "metric": "best/selection/icbhi_score",
        "seeds": [0, 1, 2],
        "scores": [61.0, 62.0, 63.0],
        "mean": 62.0,
        "ci95": [pytest.approx(59.51586, abs=1e-5), pytest.approx(64.48414, abs=1e-5)],
        "reseeded": True,
        "degenerate": None,
    }
    assert "rests on 3 seeds" in path.read_text()
    load_config(path)  # still a valid run config

    single = choose_best(OUTCOMES[:1], mode="max")
    record = selection_record(single, metric="m", reseeded=False)
    path = export_best_config(single, tmp_path / "single", header="title", record=record)
    assert "rests on 1 seed" in path.read_text() and read_selection_record(path)["ci95"] is None


def test_table1_intervals_by_hand() -> None:
    seeds = [
        outcome(f"s{seed}", "1", seed, 0.0, **metrics)
        for seed, metrics in enumerate(
            {
                REPORT_SPECIFICITY: sp,
                REPORT_SENSITIVITY: se,
                REPORT_SCORE: score,
                REPORT_SCORE_2CLASS: 70.0,
            }
            for sp, se, score in [
                (80, 40, 60),
                (82, 42, 62),
                (81, 41, 61),
                (79, 43, 61),
                (83, 39, 61),
            ]
        )
    ]
    table = table1_markdown(seeds, title="Final")
    # Score 60, 62, 61, 61, 61: mean 61, s = sqrt(0.5), half = 2.776445 * 0.70711 / sqrt(5)
    assert "| 4-class | 81.00 ± 1.58 [79.04, 82.96] | 41.00 ± 1.58 [39.04, 42.96] " in table
    assert "| 61.00 ± 0.71 [60.12, 61.88] |" in table
    metrics = table1_metrics(seeds)
    assert metrics[f"{REPORT_SCORE}_ci95_low"] == pytest.approx(60.12201, abs=1e-4)
    one = table1_markdown(seeds[:1], title="One")
    assert "(1 seed)" in one and "± 0.00" not in one


def test_table1_of_a_foldwise_final_names_seed_and_fold_of_every_run() -> None:
    runs = []
    for seed in (0, 1):
        for fold in (2, 0):
            run = outcome(f"s{seed}f{fold}", "1", seed, 0.0, **{REPORT_SCORE: 60.0 + fold})
            foldwise = {"train.protocol": "foldwise", "data.fold": fold}
            resolved = dataclasses.replace(
                run.resolved, config=apply_overrides(run.resolved.config, foldwise)
            )
            runs.append(dataclasses.replace(run, resolved=resolved))
    runs.append(dataclasses.replace(runs[0], trial_id="x", status="failed", error="boom"))
    table = table1_markdown(runs, title="Final")
    assert "4 of 5 runs finished (seed, fold: (0, 0), (0, 2), (1, 0), (1, 2))" in table
    assert "| seed | fold | Sp | Se | Score | Score 2-class |" in table
    cells = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith(("| 0 |", "| 1 |"))
    ]
    assert [(row[0], row[1], row[4]) for row in cells] == [
        ("0", "0", "60.00"),
        ("0", "2", "62.00"),
        ("1", "0", "60.00"),
        ("1", "2", "62.00"),
    ]
    assert "seed 0, fold 2 failed: boom" in table
    plain = table1_markdown([outcome("a", "1", 3, 0.0)], title="t")
    assert "| seed | Sp |" in plain and "fold" not in plain
