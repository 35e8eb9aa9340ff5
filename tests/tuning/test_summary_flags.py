"""What summary.md and Table 1 say beyond the scores: a one-class classifier is flagged, ties
rank in trial-id order, and each configuration's cost is shown (every attempt counted)."""

from __future__ import annotations

from lungsrad.config import ExperimentConfig, apply_overrides
from lungsrad.metrics import REPORT_SCORE, REPORT_SENSITIVITY, REPORT_SPECIFICITY
from tuning.cost import CostLedger, load_costs
from tuning.results import (
    TrialOutcome,
    choose_best,
    degenerate_note,
    summary_markdown,
    table1_markdown,
)
from tuning.search_space import ResolvedTrial, load_search_space


def outcome(trial_id: str, alpha: str, value: float, sp: float, se: float) -> TrialOutcome:
    config = apply_overrides(ExperimentConfig(), {"train.seed": 0})
    return TrialOutcome(
        trial_id=trial_id,
        resolved=ResolvedTrial(
            config=config,
            variant="base",
            values={"method.patch_mix.alpha": alpha},
            seed=0,
            overrides={},
        ),
        status="done",
        epochs=2,
        best_value=value,
        last={REPORT_SCORE: value, REPORT_SPECIFICITY: sp, REPORT_SENSITIVITY: se},
    )


def test_one_class_classifiers_are_flagged() -> None:
    assert "predicts 'normal' for every cycle" in degenerate_note(
        {REPORT_SPECIFICITY: 100.0, REPORT_SENSITIVITY: 0.0}
    )
    assert "never predicts 'normal'" in degenerate_note(
        {REPORT_SPECIFICITY: 0.0, REPORT_SENSITIVITY: 40.0}
    )
    assert degenerate_note({REPORT_SPECIFICITY: 70.0, REPORT_SENSITIVITY: 30.0}) is None
    assert degenerate_note({REPORT_SCORE: 50.0}) is None


def _space(tmp_path):
    path = tmp_path / "flags.yaml"
    path.write_text(
        "name: flags\nsearch: grid\nparameters:\n  method.patch_mix.alpha: {grid: [0.5, 1, 2]}\n",
        encoding="utf-8",
    )
    return load_search_space(path)


def test_summary_flags_the_winner_ranks_ties_by_trial_id_and_shows_cost(tmp_path) -> None:
    outcomes = [
        outcome("t2", "2", 50.0, 100.0, 0.0),  # one class for everything, and the best score
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
    text = summary_markdown(space, outcomes, choose_best(outcomes, mode="max"), costs=costs)
    assert "**Warning**: the best configuration predicts 'normal' for every cycle" in text
    trials = text[text.index("## Trials") :]
    assert trials.index("| t0 |") < trials.index("| t1 |")
    assert "| GPU-h |" in text
    assert "| 0.4000 (all attempts) |" in text  # t2: 1080 s + 360 s on one GPU
    assert "| 0.1000 |" in text  # t0


def test_table1_flags_a_one_class_seed() -> None:
    outcomes = [outcome("a", "1", 50.0, 100.0, 0.0), outcome("b", "1", 60.0, 70.0, 50.0)]
    text = table1_markdown(outcomes, title="t")
    assert text.count("**Warning**") == 1 and "predicts 'normal' for every cycle" in text
