"""The Pareto front of a multi-objective sweep: the configurations no other one beats under
Deb's constrained domination (as Optuna's samplers rank them: a point that keeps every constraint
beats one that breaks any; of two that break some, the smaller total violation wins; of two that
keep them all, one dominates the other when it is no worse on every objective and better on one),
in tie-break order, as a markdown table and a plot. Values are means over a configuration's
seeds; the intervals are lungsrad.statistics'.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lungsrad.files import save_figure
from lungsrad.metrics import metric_range
from lungsrad.statistics import MeanInterval, format_interval, mean_interval

PARETO_FILE = "pareto.md"
TAG_PARETO = "lungsrad.pareto"  # "true" on the child runs of the front's configurations
PARETO_PLOT = "pareto_front.png"
TIE_BREAK = (
    "the front's point with the best first objective, then (on a tie) the best second one, and "
    "so on; then the earlier trial"
)


class ObjectiveLike(Protocol):
    """An objective: a metric name and `max` or `min`."""

    @property
    def name(self) -> str: ...
    @property
    def mode(self) -> str: ...


class ConstraintLike(Protocol):
    """A bound on a metric (tuning.search_space.ConstraintSpec)."""

    @property
    def name(self) -> str: ...
    def violation(self, value: float) -> float: ...
    def describe(self) -> str: ...


@dataclass(frozen=True)
class Objective:
    """An objective as a sweep's parent run records it (param `sweep.objectives`)."""

    name: str
    mode: str  # max | min


@dataclass(frozen=True)
class Bound:
    """A constraint as a sweep's parent run records it (param `sweep.constraints`)."""

    name: str
    op: str  # >= | <=
    value: float

    def violation(self, value: float) -> float:
        """How far `value` breaks the bound (<= 0: kept)."""
        return self.value - value if self.op == ">=" else value - self.value

    def describe(self) -> str:
        return f"{self.name} {self.op} {self.value:g}"


def recorded_objectives(params: Mapping[str, str]) -> tuple[list[Objective], list[Bound]]:
    """The objectives and constraints of a sweep's parent run params ([] for a sweep of one
    metric): `sweep.objectives` ["name mode", ...], `sweep.constraints` ["name op value", ...]."""
    objectives = [
        Objective(*text.rsplit(" ", 1)) for text in json.loads(params.get("sweep.objectives", "[]"))
    ]
    bounds = []
    for text in json.loads(params.get("sweep.constraints", "[]")):
        name, op, value = text.rsplit(" ", 2)
        bounds.append(Bound(name=name, op=op, value=float(value)))
    return objectives, bounds


def candidates_of_points(points: Sequence[Any], names: Sequence[str]) -> list[Candidate]:
    """Configurations of a sweep's finished child runs (mlflow_tracking.sweep_runs.TrialPoint,
    grouped by variant and values), each metric of `names` as `best/<name>` per seed, named
    after the run of the lowest seed, in trial order."""
    groups: dict[str, list[Any]] = {}
    for point in sorted(points, key=lambda p: p.trial_id):
        key = json.dumps({"variant": point.variant, "values": point.values}, sort_keys=True)
        groups.setdefault(key, []).append(point)
    candidates = []
    for members in groups.values():
        first = min(members, key=lambda p: -1 if p.seed is None else p.seed)
        samples = {
            name: [float(p.metrics.get(f"best/{name}", math.nan)) for p in members]
            for name in names
        }
        candidates.append(
            Candidate(
                label=first.run_name or first.run_id,
                samples=samples,
                key=first.trial_id,
                run_ids=tuple(p.run_id for p in members),
            )
        )
    return candidates


@dataclass(frozen=True)
class Candidate:
    """One configuration: its name (the MLflow run name of its lowest seed) and each metric's
    value per finished seed."""

    label: str
    samples: Mapping[str, Sequence[float]]
    key: str = ""  # what the caller knows it by (e.g. its Tune trial id)
    run_ids: tuple[str, ...] = ()  # the MLflow runs of its seeds

    def interval(self, name: str) -> MeanInterval:
        """Mean and 95 % interval of `name` over the seeds."""
        return mean_interval(list(self.samples.get(name, ())), bounds=metric_range(name))

    def mean(self, name: str) -> float:
        return self.interval(name).mean


@dataclass(frozen=True)
class ParetoFront:
    """Candidates with a finite value of every objective, which of them are on the front
    (`order`: front first in tie-break order, then the rest) and which keep the constraints."""

    objectives: tuple[ObjectiveLike, ...]
    constraints: tuple[ConstraintLike, ...]
    candidates: tuple[Candidate, ...]
    front: tuple[int, ...]  # indices into candidates, tie-break order (winner first)
    feasible: tuple[bool, ...]
    violations: tuple[float, ...]
    left_out: tuple[str, ...] = field(default=())  # labels without a value of every objective

    @property
    def points(self) -> list[Candidate]:
        """The front's candidates, winner first."""
        return [self.candidates[index] for index in self.front]

    @property
    def winner(self) -> Candidate | None:
        """The front's point that wins the tie-break (TIE_BREAK), or None."""
        return self.candidates[self.front[0]] if self.front else None

    @property
    def order(self) -> list[int]:
        """Every candidate: the front in tie-break order, then the others in tie-break order."""
        rest = [
            i for i in _tie_break_order(self.candidates, self.objectives) if i not in self.front
        ]
        return [*self.front, *rest]


def _signed(candidate: Candidate, objectives: Sequence[ObjectiveLike]) -> tuple[float, ...]:
    """The objectives' means, each turned so that larger is better."""
    return tuple(candidate.mean(o.name) * (1.0 if o.mode == "max" else -1.0) for o in objectives)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether `a` Pareto-dominates `b` (both larger-is-better): no worse anywhere, better once."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def _tie_break_order(
    candidates: Sequence[Candidate], objectives: Sequence[ObjectiveLike]
) -> list[int]:
    signed = [_signed(c, objectives) for c in candidates]
    return sorted(range(len(candidates)), key=lambda i: tuple(-v for v in signed[i]))


def pareto_front(
    candidates: Sequence[Candidate],
    objectives: Sequence[ObjectiveLike],
    constraints: Sequence[ConstraintLike] = (),
) -> ParetoFront:
    """The front of `candidates` under Deb's constrained domination (module docstring). Equal
    points are both on it. A candidate without a finite mean of every objective is left out;
    a constraint's metric without a value counts as broken."""
    kept = [c for c in candidates if all(math.isfinite(c.mean(o.name)) for o in objectives)]
    kept_ids = {id(c) for c in kept}
    left_out = tuple(c.label for c in candidates if id(c) not in kept_ids)
    violations = []
    for candidate in kept:
        total = 0.0
        for constraint in constraints:
            value = candidate.mean(constraint.name)
            total += max(0.0, constraint.violation(value)) if math.isfinite(value) else math.inf
        violations.append(total)
    feasible = [v <= 0.0 for v in violations]
    signed = [_signed(c, objectives) for c in kept]

    def beats(i: int, j: int) -> bool:
        if feasible[i] != feasible[j]:
            return feasible[i]
        if not feasible[i]:
            return violations[i] < violations[j]
        return dominates(signed[i], signed[j])

    on_front = {i for i in range(len(kept)) if not any(beats(j, i) for j in range(len(kept)))}
    order = [i for i in _tie_break_order(kept, objectives) if i in on_front]
    return ParetoFront(
        objectives=tuple(objectives),
        constraints=tuple(constraints),
        candidates=tuple(kept),
        front=tuple(order),
        feasible=tuple(feasible),
        violations=tuple(violations),
        left_out=left_out,
    )


def pareto_markdown(front: ParetoFront, *, winner_mark: str = "tie-break winner") -> list[str]:
    """The "Pareto front" section: every configuration, the front first in tie-break order,
    each objective as mean [95 % interval] over seeds, whether it keeps the constraints."""
    objectives = ", ".join(f"`{o.name}` ({o.mode})" for o in front.objectives)
    bounds = "; ".join(f"`{c.describe()}`" for c in front.constraints)
    lines = [
        "## Pareto front",
        "",
        f"{len(front.front)} of {len(front.candidates)} configurations are on the front of "
        f"{objectives}" + (f", subject to {bounds}" if bounds else "") + ". Each objective is "
        "read at the epoch where the first one was best; values are the mean ± sample std "
        "[95 % Student-t interval] over seeds where a configuration has several. Front first, "
        f"in tie-break order ({TIE_BREAK}).",
        "",
    ]
    if front.constraints and not any(front.feasible):
        lines += [
            "**No configuration keeps the constraints**: the front holds the ones that "
            "break them least.",
            "",
        ]
    head = ["", "run", *(f"{o.name} ({o.mode})" for o in front.objectives)]
    head += ["constraints kept"] if front.constraints else []
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for rank, index in enumerate(front.order):
        candidate = front.candidates[index]
        mark = ""
        if index in front.front:
            mark = f"**front, {winner_mark}**" if rank == 0 else "front"
        cells = [mark, candidate.label.replace("|", "/")]
        cells += [format_interval(candidate.interval(o.name)) for o in front.objectives]
        if front.constraints:
            cells.append("yes" if front.feasible[index] else _broken(candidate, front.constraints))
        lines.append("| " + " | ".join(cells) + " |")
    if front.left_out:
        lines += ["", f"Left out (no value of every objective): {', '.join(front.left_out)}."]
    return lines


def _broken(candidate: Candidate, constraints: Sequence[ConstraintLike]) -> str:
    broken = [
        c.describe()
        for c in constraints
        if not (math.isfinite(v := candidate.mean(c.name)) and c.violation(v) <= 0.0)
    ]
    return "no (" + "; ".join(broken) + ")"


def pareto_figure(front: ParetoFront, *, title: str) -> Any:
    """The first two objectives (a matplotlib Figure): every configuration as a dot (a cross
    when it breaks a constraint), the front highlighted and joined in the first objective's
    order, 95 % intervals over seeds as error bars where there are any."""
    from matplotlib.figure import Figure

    x_objective, y_objective = front.objectives[0], front.objectives[1]
    figure = Figure(figsize=(6.0, 4.4), dpi=120)
    axes = figure.subplots()
    for index, candidate in enumerate(front.candidates):
        on_front = index in front.front
        x, y = candidate.interval(x_objective.name), candidate.interval(y_objective.name)
        axes.errorbar(
            [x.mean],
            [y.mean],
            xerr=_error(x),
            yerr=_error(y),
            marker="o" if front.feasible[index] else "x",
            color="tab:red" if on_front else "tab:gray",
            alpha=1.0 if on_front else 0.6,
            capsize=3,
            linestyle="none",
        )
    points = sorted(
        (front.candidates[i].mean(x_objective.name), front.candidates[i].mean(y_objective.name))
        for i in front.front
    )
    axes.plot([p[0] for p in points], [p[1] for p in points], color="tab:red", label="Pareto front")
    winner = front.winner
    if winner is not None:
        axes.annotate(
            winner.label,
            (winner.mean(x_objective.name), winner.mean(y_objective.name)),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axes.set_xlabel(f"{x_objective.name} ({x_objective.mode})")
    axes.set_ylabel(f"{y_objective.name} ({y_objective.mode})")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _error(interval: MeanInterval) -> list[list[float]] | None:
    if not interval.has_interval:
        return None
    return [[interval.mean - interval.low], [interval.high - interval.mean]]


def write_pareto_report(
    front: ParetoFront, folder: Path, *, title: str, winner_mark: str = "tie-break winner"
) -> tuple[list[str], Path]:
    """Writes the plot into `folder` (atomically); the markdown lines and the plot's path."""
    folder.mkdir(parents=True, exist_ok=True)
    plot = folder / PARETO_PLOT
    save_figure(pareto_figure(front, title=title), plot)
    lines = pareto_markdown(front, winner_mark=winner_mark)
    if len(front.objectives) > 2:
        lines += [
            "",
            f"The plot shows the first two objectives; the table above has all "
            f"{len(front.objectives)}.",
        ]
    return [*lines, "", f"![Pareto front]({PARETO_PLOT})"], plot
