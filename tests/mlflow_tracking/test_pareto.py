"""The Pareto front of a multi-objective sweep (mlflow_tracking.pareto): domination under max
and min modes, ties, Deb's constrained domination (feasible first, then the least violation),
the tie-break order, and the table and plot written from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mlflow_tracking.pareto import (
    PARETO_PLOT,
    Candidate,
    dominates,
    pareto_front,
    pareto_markdown,
    write_pareto_report,
)
from tuning.search_space.document import ConstraintSpec


@dataclass(frozen=True)
class Objective:
    name: str
    mode: str


SCORE, SENSITIVITY, COST, SPECIFICITY = "score", "sensitivity", "cost", "specificity"
MAX_MAX = (Objective(SCORE, "max"), Objective(SENSITIVITY, "max"))


def point(label: str, **values: float | list[float]) -> Candidate:
    samples = {name: v if isinstance(v, list) else [v] for name, v in values.items()}
    return Candidate(label=label, samples=samples, key=label)


def front_labels(candidates, objectives=MAX_MAX, constraints=()) -> list[str]:
    return [c.label for c in pareto_front(candidates, objectives, constraints).points]


def test_dominates_needs_no_worse_everywhere_and_better_once() -> None:
    assert dominates((2.0, 1.0), (1.0, 1.0))
    assert not dominates((1.0, 1.0), (1.0, 1.0))  # equal: neither
    assert not dominates((2.0, 0.0), (1.0, 1.0))  # a trade-off: neither


def test_front_under_max_modes_in_tie_break_order() -> None:
    candidates = [
        point("a", score=60, sensitivity=30),
        point("b", score=55, sensitivity=40),
        point("c", score=50, sensitivity=35),  # dominated by b
        point("d", score=62, sensitivity=10),
        point("e", score=40, sensitivity=40),  # dominated by b (equal sensitivity, less score)
    ]
    # Winner first: best first objective, then the rest by it.
    assert front_labels(candidates) == ["d", "a", "b"]


def test_min_mode_turns_the_objective() -> None:
    objectives = (Objective(SCORE, "max"), Objective(COST, "min"))
    candidates = [
        point("cheap", score=50, cost=10),
        point("good", score=60, cost=100),
        point("worse", score=50, cost=20),  # as good as cheap, costs more
        point("dear", score=55, cost=200),  # good beats it on both
    ]
    assert front_labels(candidates, objectives) == ["good", "cheap"]
    # The same points with cost maximised: the dearest are now the best.
    assert "dear" in front_labels(candidates, (Objective(SCORE, "max"), Objective(COST, "max")))


def test_ties_are_all_on_the_front_and_keep_their_order() -> None:
    candidates = [
        point("first", score=50, sensitivity=50),
        point("second", score=50, sensitivity=50),
        point("third", score=40, sensitivity=40),
    ]
    assert front_labels(candidates) == ["first", "second"]
    # A tie on the first objective goes to the second one.
    tied = [point("low", score=50, sensitivity=10), point("high", score=50, sensitivity=20)]
    assert front_labels(tied) == ["high"]


def test_constraints_put_feasible_points_first() -> None:
    floor = ConstraintSpec(name=SPECIFICITY, op=">=", value=70)
    candidates = [
        point("best_but_breaks", score=70, sensitivity=60, specificity=50),
        point("kept", score=60, sensitivity=40, specificity=80),
        point("kept_tradeoff", score=55, sensitivity=50, specificity=75),
        point("kept_dominated", score=50, sensitivity=30, specificity=90),
    ]
    front = pareto_front(candidates, MAX_MAX, (floor,))
    assert [c.label for c in front.points] == ["kept", "kept_tradeoff"]
    assert front.feasible == (False, True, True, True)
    # Without the constraint the infeasible point dominates both.
    assert front_labels(candidates) == ["best_but_breaks"]


def test_no_feasible_point_the_least_violation_wins() -> None:
    cap = ConstraintSpec(name=COST, op="<=", value=10)
    candidates = [
        point("far", score=90, sensitivity=90, cost=50),
        point("near", score=10, sensitivity=10, cost=12),
        point("no_cost_value", score=95, sensitivity=95),  # a missing value breaks it
    ]
    front = pareto_front(candidates, MAX_MAX, (cap,))
    assert [c.label for c in front.points] == ["near"]
    assert front.violations[2] == math.inf
    assert any("No configuration keeps the constraints" in line for line in pareto_markdown(front))


def test_means_over_seeds_decide_and_points_without_values_are_left_out() -> None:
    candidates = [
        point("two_seeds", score=[60, 40], sensitivity=[50, 50]),  # mean 50
        point("one_seed", score=55, sensitivity=50),
        point("failed", score=math.nan, sensitivity=70),
    ]
    front = pareto_front(candidates, MAX_MAX)
    assert [c.label for c in front.points] == ["one_seed"]
    assert front.left_out == ("failed",)


def test_table_and_plot(tmp_path: Path) -> None:
    floor = ConstraintSpec(name=SPECIFICITY, op=">=", value=70)
    candidates = [
        point("lr=0.1 seed=0", score=[60, 62, 61], sensitivity=[30, 31, 29], specificity=90),
        point("lr=0.2 seed=0", score=[55, 54, 56], sensitivity=[40, 42, 41], specificity=80),
        point("lr=0.3 seed=0", score=[50, 49, 51], sensitivity=[20, 21, 22], specificity=60),
    ]
    front = pareto_front(candidates, MAX_MAX, (floor,))
    lines, plot = write_pareto_report(front, tmp_path, title="test")
    assert plot == tmp_path / PARETO_PLOT and plot.read_bytes().startswith(b"\x89PNG")
    rows = [line for line in lines if line.startswith("| ")][1:]
    assert rows[0].startswith("| **front, tie-break winner** | lr=0.1 seed=0 | 61.00 ± 1.00 [")
    assert rows[1].startswith("| front | lr=0.2 seed=0 |") and rows[1].endswith("| yes |")
    assert rows[2].startswith("|  | lr=0.3 seed=0 |")
    assert rows[2].endswith("| no (specificity >= 70) |")


def test_three_objectives_plot_the_first_two_and_tabulate_all(tmp_path: Path) -> None:
    objectives = (*MAX_MAX, Objective(COST, "min"))
    candidates = [
        point("a", score=60, sensitivity=30, cost=5),
        point("b", score=60, sensitivity=30, cost=9),  # a beats it on cost only
        point("c", score=50, sensitivity=20, cost=1),  # cheapest: on the front
    ]
    front = pareto_front(candidates, objectives)
    assert [c.label for c in front.points] == ["a", "c"]
    lines, plot = write_pareto_report(front, tmp_path, title="three")
    header = next(line for line in lines if line.startswith("|  | run |"))
    assert plot.is_file() and header.endswith("| score (max) | sensitivity (max) | cost (min) |")
    assert any("the first two objectives; the table above has all 3" in line for line in lines)
