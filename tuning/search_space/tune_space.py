"""The Ray Tune param space of a search space: the only module of tuning.search_space that
imports Ray.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from tuning.search_space.document import POINT_KEY, SEED_KEY, VARIANT_KEY
from tuning.search_space.space import Parameter, SearchSpace


def tune_param_space(space: SearchSpace) -> dict[str, Any]:
    """The Ray Tune param space of `space`: variants, points or parameters, and seeds."""
    param_space: dict[str, Any] = {}
    if space.has_variants:
        names = list(space.variants)
        param_space[VARIANT_KEY] = (
            tune.choice(names) if space.search == "tpe" else tune.grid_search(names)
        )
    if space.search == "one_at_a_time":
        param_space[POINT_KEY] = tune.grid_search(space.points())
    else:
        for parameter in space.parameters:
            param_space[parameter.name] = _tune_domain(parameter, search=space.search)
    param_space[SEED_KEY] = (
        tune.grid_search(list(space.seeds)) if len(space.seeds) > 1 else space.seeds[0]
    )
    return param_space


def _tune_domain(parameter: Parameter, *, search: str) -> Any:
    if parameter.is_discrete:
        values = list(parameter.tune_values)
        return tune.grid_search(values) if search == "grid" else tune.choice(values)
    assert parameter.low is not None and parameter.high is not None
    if parameter.kind == "uniform":
        return tune.uniform(parameter.low, parameter.high)
    if parameter.kind == "loguniform":
        return tune.loguniform(parameter.low, parameter.high)
    return tune.randint(int(parameter.low), int(parameter.high) + 1)  # upper bound exclusive
