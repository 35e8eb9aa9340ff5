"""The objectives of a search space: one `metric`/`mode`, or several `metrics` with modes and
optional `constraints` (a multi-objective TPE or NSGA-II search, docs/sweeps.md
"Multi-objective"), checked against what a trial reports under the sweep's protocol.
"""

from __future__ import annotations

import difflib

from lungsrad.metrics import SELECTION_SCORE
from tuning.result_keys import COST_OBJECTIVE
from tuning.search_space.checks import Locator
from tuning.search_space.document import (
    ConstraintSpec,
    ObjectiveSpec,
    SpaceDocument,
    known_metrics,
)


def space_objectives(
    document: SpaceDocument, protocol: str, locate: Locator
) -> tuple[tuple[ObjectiveSpec, ...], tuple[ConstraintSpec, ...]]:
    """The space's objectives (the first one drives ASHA, ranking and each trial's epoch) and
    constraints.

    Raises:
        UserError: one line naming the file and key: an unknown metric, a bad mode, both
            `metric` and `metrics`, several metrics under a search that optimises one.
    """
    objectives: tuple[ObjectiveSpec, ...]
    if document.metrics is None:
        metric = SELECTION_SCORE if document.metric is None else document.metric
        _check_name(metric, protocol, locate, ["metric"], allow_cost=False)
        objectives = (ObjectiveSpec(name=metric, mode=document.mode or "max"),)
    else:
        objectives = _listed_objectives(document, protocol, locate)
    _check_constraints(document, objectives, protocol, locate)
    if document.sampler != "tpe" and document.search != "tpe":
        raise locate.error(
            ["sampler"],
            f"sampler '{document.sampler}' is an Optuna sampler: it needs `search: tpe`, "
            f"not '{document.search}'",
        )
    return objectives, document.constraints


def _listed_objectives(
    document: SpaceDocument, protocol: str, locate: Locator
) -> tuple[ObjectiveSpec, ...]:
    """`metrics: [{name, mode}, ...]`, checked."""
    assert document.metrics is not None
    if document.metric is not None or document.mode is not None:
        raise locate.error(
            ["metrics"],
            "give either `metric`/`mode` (one objective) or `metrics` (names with modes), not both",
        )
    objectives = document.metrics
    if not objectives:
        raise locate.error(["metrics"], "metrics must name at least one metric")
    names = [objective.name for objective in objectives]
    for index, objective in enumerate(objectives):
        _check_name(objective.name, protocol, locate, ["metrics", f"[{index}]"], allow_cost=True)
        if names.count(objective.name) > 1:
            raise locate.error(["metrics"], f"metrics names '{objective.name}' twice")
        if objective.name == COST_OBJECTIVE and objective.mode != "min":
            raise locate.error(
                ["metrics"], f"metrics[{index}]: {COST_OBJECTIVE} can only be minimised (mode: min)"
            )
    if objectives[0].name == COST_OBJECTIVE:
        raise locate.error(
            ["metrics"],
            f"metrics[0]: {COST_OBJECTIVE} cannot come first (the first metric picks each "
            "trial's epoch and drives ASHA); list a score first",
        )
    if len(objectives) > 1 and document.search != "tpe":
        raise locate.error(
            ["metrics"],
            f"search '{document.search}' optimises one metric: several `metrics` need "
            "`search: tpe` (Optuna's multi-objective TPE, or `sampler: nsga2`); or keep one "
            "`metric:` and compare the others in the report",
        )
    return objectives


def _check_constraints(
    document: SpaceDocument,
    objectives: tuple[ObjectiveSpec, ...],
    protocol: str,
    locate: Locator,
) -> None:
    if not document.constraints:
        return
    if len(objectives) < 2:
        raise locate.error(
            ["constraints"],
            "constraints filter a Pareto front: they need two or more `metrics` "
            "(a multi-objective space)",
        )
    for index, constraint in enumerate(document.constraints):
        _check_name(
            constraint.name, protocol, locate, ["constraints", f"[{index}]"], allow_cost=True
        )


def _check_name(
    name: str, protocol: str, locate: Locator, keys: list[str], *, allow_cost: bool
) -> None:
    """`name` is a metric the trials report under `protocol` (or the cost objective)."""
    known = known_metrics(protocol) + ((COST_OBJECTIVE,) if allow_cost else ())
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    where = f"{keys[0]}{''.join(keys[1:])}.name: " if len(keys) > 1 else ""
    raise locate.error(
        keys, f"{where}metric {name!r} is not reported under protocol '{protocol}'{hint}"
    )
