"""The parsed search space: its parameters, the resolution of a Tune trial config into an
ExperimentConfig (base YAML + sampled overrides), and run naming.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.config import ExperimentConfig, apply_overrides, flatten_config
from mlflow_tracking.values import display_value
from tuning.search_space.document import (
    BASE_POINT,
    POINT_KEY,
    SCALARS,
    SEED_KEY,
    VARIANT_KEY,
    ConstraintSpec,
    ObjectiveSpec,
    ReseedSpec,
    ResourceSpec,
    SchedulerSpec,
)


@dataclass(frozen=True)
class Parameter:
    """One swept parameter: a dotted config path, or a named group setting several paths.

    Discrete values (choice/grid) that are not plain scalars (lists, group mappings) travel
    through Tune and Optuna as string labels and are decoded by `overrides`.
    """

    name: str  # dotted config path, or a group name (values are {path: value} mappings)
    kind: str  # choice | grid | uniform | loguniform | int
    values: tuple[Any, ...] = ()  # choice/grid: the values as written
    low: float | None = None  # uniform/loguniform/int: lower bound (inclusive)
    high: float | None = None  # uniform/loguniform/int: upper bound (inclusive)
    labels: tuple[str, ...] = ()  # choice/grid: one label per value (used when encoded)
    is_group: bool = False  # values are {path: value} mappings

    @property
    def is_discrete(self) -> bool:
        """Listed values (choice/grid) rather than a range."""
        return self.kind in ("choice", "grid")

    @property
    def is_encoded(self) -> bool:
        """Values travel through Tune as labels (groups and non-scalar values)."""
        return self.is_group or not all(isinstance(v, SCALARS) for v in self.values)

    @property
    def tune_values(self) -> tuple[Any, ...]:
        """Discrete values as Tune sees them (labels when encoded)."""
        return self.labels if self.is_encoded else self.values

    @property
    def config_paths(self) -> list[str]:
        """The config paths this parameter sets (a group's values may set several)."""
        if self.is_group:
            return [path for value in self.values for path in value if path != "label"]
        return [self.name]

    def listed_values(self) -> tuple[Any, ...]:
        """Every value one_at_a_time visits: listed values, or each integer of an `int` range."""
        if self.is_discrete:
            return self.tune_values
        if self.kind == "int":
            assert self.low is not None and self.high is not None
            return tuple(range(int(self.low), int(self.high) + 1))
        raise ValueError(f"parameter '{self.name}' has no listed values ({self.kind} range)")

    def overrides(self, sampled: Any) -> dict[str, Any]:
        """Config overrides (dotted path -> value) for a value as Tune sampled it."""
        if self.is_encoded:
            try:
                value = self.values[self.labels.index(sampled)]
            except ValueError:
                raise ValueError(
                    f"parameter '{self.name}' has no value labelled {sampled!r}"
                ) from None
            if self.is_group:
                return {path: item for path, item in value.items() if path != "label"}
            return {self.name: value}
        if self.kind == "int":
            return {self.name: int(sampled)}
        return {self.name: sampled}

    def label(self, sampled: Any) -> str:
        """The identity of a sampled value as text (tags, seed grouping, report axis): exact,
        so that two values never share a label (floats as their shortest exact repr; a
        whole float as the integer it equals, as a float setting stores 1 and 1.0 alike)."""
        if isinstance(sampled, float) and sampled.is_integer():
            return str(int(sampled))
        return str(sampled)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search-space file."""

    name: str
    path: Path  # the YAML file
    text: str  # its content (logged with the sweep)
    variants: dict[str, ExperimentConfig]  # base configs by name ("base" when none listed)
    parameters: tuple[Parameter, ...]
    search: str
    search_seed: int
    scheduler: SchedulerSpec
    num_samples: int
    max_concurrent_trials: int | None
    resources: ResourceSpec
    seeds: tuple[int, ...]
    protocol: str
    metric: str
    mode: str
    max_failures: int
    description: str = ""
    reseed: ReseedSpec | None = None
    requires_pretrained: bool = False  # refuse base configs without model.checkpoint
    # Every objective, the first being (metric, mode); () reads as that one (loader fills it).
    objectives: tuple[ObjectiveSpec, ...] = ()
    constraints: tuple[ConstraintSpec, ...] = ()  # what a Pareto point must keep
    sampler: str = "tpe"  # Optuna's sampler of a tpe search: tpe | nsga2

    # -- derived ---------------------------------------------------------------------------

    @property
    def has_variants(self) -> bool:
        """More than one base config (e.g. the Table 2 rows)."""
        return len(self.variants) > 1

    @property
    def objective_list(self) -> tuple[ObjectiveSpec, ...]:
        """The objectives, the first one (metric, mode) driving ASHA and the ranking."""
        if self.objectives:
            return self.objectives
        return (ObjectiveSpec(name=self.metric, mode="min" if self.mode == "min" else "max"),)

    @property
    def is_multi_objective(self) -> bool:
        """Several `metrics`: an Optuna multi-objective search and a Pareto front."""
        return len(self.objective_list) > 1

    @property
    def tracked_metrics(self) -> tuple[str, ...]:
        """Metrics besides the first objective that a trial reports as `best/<name>`: their
        values at the epoch where the first objective was best so far (objectives, then
        constraints; tuning.trainable)."""
        names = [o.name for o in self.objective_list[1:]] + [c.name for c in self.constraints]
        return tuple(dict.fromkeys(n for n in names if n != self.metric))

    @property
    def base_config(self) -> ExperimentConfig:
        """The first variant's base config."""
        return next(iter(self.variants.values()))

    @property
    def max_epochs(self) -> int:
        """The largest train.num_epochs of any base config."""
        return max(config.train.num_epochs for config in self.variants.values())

    def parameter(self, name: str) -> Parameter:
        """The parameter called `name`."""
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(name)

    def points(self) -> list[dict[str, Any]]:
        """one_at_a_time: the base point, then each parameter's values with the others at base.

        A value equal to the base config's own value is the base point again and is skipped.
        Each point is {"parameter": name or "base", "value": value as Tune carries it}.
        """
        points: list[dict[str, Any]] = [{"parameter": BASE_POINT, "value": None}]
        base = self.base_config
        for parameter in self.parameters:
            for value in parameter.listed_values():
                if apply_overrides(base, parameter.overrides(value)) == base:
                    continue
                points.append({"parameter": parameter.name, "value": value})
        return points

    def base_labels(self) -> dict[str, str]:
        """Each parameter's value in the (first) base config, labelled as trials label it.

        A group whose values all differ from the base config gets "base".
        """
        base = self.base_config
        flat = flatten_config(base)
        labels: dict[str, str] = {}
        for parameter in self.parameters:
            if not parameter.is_group:
                labels[parameter.name] = parameter.label(flat[parameter.name])
                continue
            labels[parameter.name] = BASE_POINT
            for value in parameter.listed_values():
                if apply_overrides(base, parameter.overrides(value)) == base:
                    labels[parameter.name] = parameter.label(value)
                    break
        return labels

    def num_trials(self) -> int | None:
        """Trials the sweep will run (None: unknown in advance)."""
        if self.search == "tpe":
            return self.num_samples
        seeds_and_variants = len(self.seeds) * len(self.variants)
        if self.search == "one_at_a_time":
            return len(self.points()) * seeds_and_variants
        grid = math.prod(len(p.values) for p in self.parameters if p.is_discrete)
        return grid * self.num_samples * seeds_and_variants

    def resolve(self, trial_config: Mapping[str, Any]) -> ResolvedTrial:
        """The experiment config and labels of one Tune trial config."""
        variant = trial_config.get(VARIANT_KEY, next(iter(self.variants)))
        if variant not in self.variants:
            raise ValueError(f"trial config names unknown variant {variant!r}")
        overrides: dict[str, Any] = {}
        values: dict[str, str] = {}
        if self.search == "one_at_a_time":
            point = trial_config[POINT_KEY]
            if point["parameter"] != BASE_POINT:
                parameter = self.parameter(point["parameter"])
                overrides.update(parameter.overrides(point["value"]))
                values[parameter.name] = parameter.label(point["value"])
        else:
            for parameter in self.parameters:
                sampled = trial_config[parameter.name]
                overrides.update(parameter.overrides(sampled))
                values[parameter.name] = parameter.label(sampled)
        seed = int(trial_config.get(SEED_KEY, self.seeds[0]))
        overrides["train.seed"] = seed
        config = apply_overrides(self.variants[variant], overrides)
        return ResolvedTrial(
            config=config, variant=variant, values=values, seed=seed, overrides=overrides
        )


def display_label(label: str) -> str:
    """A value label shortened for reading (mlflow_tracking.values.display_value: the one
    display precision of run names, console, summary and report); display only."""
    return display_value(label)


@dataclass(frozen=True)
class ResolvedTrial:
    """What a Tune trial config means."""

    config: ExperimentConfig  # base variant + sampled overrides + seed
    variant: str  # base config name
    values: dict[str, str]  # swept parameter -> exact label of its value (Parameter.label)
    seed: int  # train.seed
    overrides: dict[str, Any]  # dotted path -> value applied on the variant's base config

    def describe_config(self) -> str:
        """The configuration without its seed, e.g. "variant=lung_srad method.patch_mix.alpha=0.5"
        ("base config" for the unchanged base)."""
        parts = [f"variant={self.variant}"] if self.variant != BASE_POINT else []
        parts += [f"{name}={display_label(label)}" for name, label in self.values.items()]
        return " ".join(parts) or "base config"

    def describe(self) -> str:
        """The configuration and its seed on one line."""
        return f"{self.describe_config()} seed={self.seed}"

    def describe_short(self) -> str:
        """A run name: the swept values by their last path component and the seed, e.g.
        "temperature=0.05 sigma=1.2 seed=0" (the MLflow runs table shows about 30 characters)."""
        names = short_parameter_names(list(self.values))
        parts = [self.variant] if self.variant != BASE_POINT else []
        parts += [f"{names[name]}={display_label(label)}" for name, label in self.values.items()]
        return " ".join([*parts, f"seed={self.seed}"])

    def group_key(self) -> str:
        """Identifies the configuration regardless of seed (seeds of one point share it)."""
        return json.dumps({"variant": self.variant, "values": self.values}, sort_keys=True)


def short_parameter_names(names: Sequence[str]) -> dict[str, str]:
    """Each dotted parameter path by its last component ("method.patch_mix.temperature" ->
    "temperature"); paths whose last components collide keep their full path."""
    last = [name.rsplit(".", 1)[-1] for name in names]
    return {
        name: short if last.count(short) == 1 else name
        for name, short in zip(names, last, strict=True)
    }


def space_summary(space: SearchSpace) -> dict[str, Any]:
    """Settings of the sweep as flat params (logged on the MLflow parent run)."""
    summary: dict[str, Any] = {
        "sweep.name": space.name,
        "sweep.search": space.search,
        "sweep.search_seed": space.search_seed,
        "sweep.num_samples": space.num_samples,
        "sweep.max_concurrent_trials": space.max_concurrent_trials,
        "sweep.seeds": list(space.seeds),
        "sweep.protocol": space.protocol,
        "sweep.metric": space.metric,
        "sweep.mode": space.mode,
        "sweep.max_failures": space.max_failures,
        "sweep.variants": list(space.variants),
        "sweep.parameters": [p.name for p in space.parameters],
        "sweep.num_trials": space.num_trials(),
    }
    if space.is_multi_objective:
        summary["sweep.objectives"] = [f"{o.name} {o.mode}" for o in space.objective_list]
        summary["sweep.constraints"] = [c.describe() for c in space.constraints]
        summary["sweep.sampler"] = space.sampler
    if space.reseed is not None:
        summary["sweep.reseed.top_k"] = space.reseed.top_k
        summary["sweep.reseed.seeds"] = list(space.reseed.seeds)
    summary.update(
        {f"sweep.scheduler.{k}": v for k, v in dataclasses.asdict(space.scheduler).items()}
    )
    summary.update({f"sweep.resources.{k}": v for k, v in space.resources.as_dict().items()})
    return summary
