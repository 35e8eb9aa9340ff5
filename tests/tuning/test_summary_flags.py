"""What summary.md, Table 1, best_config.yaml and the console say beyond the scores: a degenerate
classifier (lungsrad.metrics.degenerate_note, from the predicted classes) is flagged and named
wherever its score is shown, never chosen over a non-degenerate configuration, and a final says
which of its seeds were degenerate; ties rank in trial-id order, and each configuration's cost is
shown (every attempt counted)."""

from __future__ import annotations

import numpy as np

from lungsrad.config import ExperimentConfig, apply_overrides
from lungsrad.metrics import (
    REPORT_PREFIX,
    REPORT_SCORE,
    REPORT_SENSITIVITY,
    REPORT_SPECIFICITY,
    prediction_metrics,
)
from mlflow_tracking.store import open_experiment
from mlflow_tracking.uri import sqlite_uri
from tuning.cost import CostLedger, load_costs
from tuning.presentation import SweepOutcome, best_description, print_outcome
from tuning.results import (
    TrialOutcome,
    choose_best,
    export_best_config,
    selection_record,
    summary_markdown,
    table1_markdown,
)
from tuning.search_space import ResolvedTrial, load_search_space

# Test cycles per true class (normal, crackle, wheeze, both), the confusion rows below.
ALL_NORMAL = np.array([[60, 0, 0, 0], [30, 0, 0, 0], [20, 0, 0, 0], [10, 0, 0, 0]])
ALL_BOTH = np.array([[0, 0, 0, 60], [0, 0, 0, 30], [0, 0, 0, 20], [0, 0, 0, 10]])
MIXED = np.array([[40, 10, 5, 5], [10, 15, 5, 0], [5, 5, 10, 0], [2, 3, 0, 5]])


def outcome(
    trial_id: str,
    alpha: str,
    value: float,
    sp: float,
    se: float,
    *,
    confusion: np.ndarray = MIXED,
    seed: int = 0,
) -> TrialOutcome:
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
        status="done",
        epochs=2,
        best_value=value,
        last={
            REPORT_SCORE: value,
            REPORT_SPECIFICITY: sp,
            REPORT_SENSITIVITY: se,
            **prediction_metrics(REPORT_PREFIX, confusion),
        },
    )


def _space(tmp_path):
    path = tmp_path / "flags.yaml"
    path.write_text(
        "name: flags\nsearch: grid\nparameters:\n  method.patch_mix.alpha: {grid: [0.5, 1, 2]}\n",
        encoding="utf-8",
    )
    return load_search_space(path)


def test_a_model_calling_every_cycle_both_is_named_for_both_not_normal() -> None:
    # The smoke sweep on real ICBHI recordings: Se 0 (no 'both' cycle in its test split would
    # make it so) used to read "predicts 'normal' for every cycle (Sp 0, Se 0)".
    flagged = outcome("t0", "1", 8.3, 0.0, 16.7, confusion=ALL_BOTH)
    assert flagged.degenerate == "degenerate: predicts only 'both'"
    assert outcome("t1", "1", 50.0, 100.0, 0.0, confusion=ALL_NORMAL).degenerate == (
        "degenerate: predicts only 'normal'"
    )
    assert outcome("t2", "1", 55.0, 66.7, 50.0).degenerate is None
    assert TrialOutcome(**{**flagged.__dict__, "last": {REPORT_SCORE: 50.0}}).degenerate is None


def test_summary_never_ranks_a_degenerate_configuration_first_and_shows_cost(tmp_path) -> None:
    outcomes = [
        outcome("t2", "2", 50.0, 100.0, 0.0, confusion=ALL_NORMAL),  # the best score
        outcome("t1", "1", 40.0, 60.0, 20.0),
        outcome("t0", "0.5", 40.0, 55.0, 25.0),  # tied with t1: earlier trial id first
    ]
    outcomes.sort(key=lambda o: o.trial_id)
    ledger = CostLedger(tmp_path / "cost", resources={"gpu": 1}, epochs_max=2)
    for number, trial in enumerate(("t0", "t1", "t2")):
        ledger.start(trial, now=0.0)
        ledger.end(trial, now=360.0 * (number + 1))
    ledger.start("t2", now=2000.0)  # t2 was retried
    ledger.end("t2", now=2360.0)
    costs = load_costs(tmp_path / "cost")
    space = _space(tmp_path)
    best = choose_best(outcomes, mode="max")
    assert best is not None and best.representative.trial_id == "t0" and best.degenerate is None
    text = summary_markdown(space, outcomes, best, costs=costs)
    assert "**Warning**" not in text
    configurations = text[text.index("## Configurations") : text.index("## Trials")]
    assert configurations.index("| 1 | method.patch_mix.alpha=0.5") < configurations.index(
        "| 2 | method.patch_mix.alpha=1"
    )
    assert "| 3 | method.patch_mix.alpha=2 (degenerate: predicts only 'normal') |" in configurations
    trials = text[text.index("## Trials") :]
    assert trials.index("| t0 |") < trials.index("| t1 |")
    assert "done (degenerate: predicts only 'normal')" in trials
    assert "| GPU-h |" in text
    assert "| 0.4000 (all attempts) |" in text  # t2: 1080 s + 360 s on one GPU
    assert "| 0.1000 |" in text  # t0


def test_when_every_configuration_is_degenerate_every_output_says_so(tmp_path, capsys) -> None:
    outcomes = [
        outcome("t0", "0.5", 50.0, 100.0, 0.0, confusion=ALL_NORMAL),
        outcome("t1", "1", 8.3, 0.0, 16.7, confusion=ALL_BOTH),
    ]
    space = _space(tmp_path)
    best = choose_best(outcomes, mode="max")
    assert best is not None and best.representative.trial_id == "t0"
    text = summary_markdown(space, outcomes, best)
    assert "**Warning: the best configuration is degenerate: predicts only 'normal'.**" in text
    assert "**All 2 finished configurations have a degenerate seed" in text
    record = selection_record(best, metric="best/selection/icbhi_score", reseeded=False)
    assert record["degenerate"] == "degenerate: predicts only 'normal'"
    path = export_best_config(best, tmp_path, header="Best configuration", record=record)
    header = path.read_text(encoding="utf-8").splitlines()[:2]
    assert header == [
        "# Warning: the best configuration is degenerate: predicts only 'normal'.",
        "# All 2 finished configurations have a degenerate seed (they rank below any without "
        "one): this sweep found no usable classifier.",
    ]
    target = open_experiment(sqlite_uri(tmp_path / "mlflow.db"), "flags")
    print_outcome(
        SweepOutcome(
            folder=tmp_path,
            tracking=target,
            parent_run_id="parent",
            outcomes=outcomes,
            best=best,
            best_config_path=path,
            summary_path=tmp_path / "summary.md",
            seconds=1.0,
        )
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "best: method.patch_mix.alpha=0.5 (mean 50.00 over 1 seed(s)); "
        "degenerate: predicts only 'normal'"
    )
    assert lines[2].startswith("warning: all 2 finished configurations have a degenerate seed")
    # The MLflow parent run's description (its run page) says it too.
    description = best_description(space, best, outcomes, "sweep")
    assert "**Warning**: degenerate: predicts only 'normal'" in description


def test_a_final_names_its_degenerate_seed_not_the_whole_configuration(tmp_path) -> None:
    outcomes = [
        outcome("a", "1", 50.0, 100.0, 0.0, confusion=ALL_NORMAL, seed=0),
        outcome("b", "1", 60.0, 70.0, 50.0, seed=1),
    ]
    table = table1_markdown(outcomes, title="t")
    assert table.count("**Warning**") == 1
    assert (
        "**Warning**: 1 of 2 seeds degenerate (seed 0: predicts only 'normal'); the means above "
        "include every finished seed." in table
    )
    best = choose_best(outcomes, mode="max")
    assert best is not None and best.degenerate == (
        "1 of 2 seeds degenerate (seed 0: predicts only 'normal')"
    )
    summary = summary_markdown(_space(tmp_path), outcomes, best)
    assert (
        "**Warning: the best configuration has 1 of 2 seeds degenerate (seed 0: predicts only "
        "'normal').**" in summary
    )
    assert "every configuration" not in summary.lower() and "All " not in summary
