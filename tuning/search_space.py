"""Search-space YAML files (search_spaces/*.yaml): parsing, validation against ExperimentConfig,
and the Ray Tune param space they become. The format is documented in search_spaces/README.md.

Loading needs no Ray: every path, domain and setting is checked here, so a typo fails in about a
second naming the file, line and key, before a cluster is started.
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import itertools
import json
import math
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lungsrad.config import (
    RANDOM_INIT_CHECKPOINT,
    VALIDATION_PROTOCOLS,
    ExperimentConfig,
    SchemaError,
    apply_overrides,
    check_config_path,
    checkpoint_file,
    config_from_dict,
    field_rule,
    flatten_config,
    load_config,
    parse_typed,
    read_yaml_file,
)
from lungsrad.errors import UserError
from lungsrad.metrics import (
    EPOCH,
    EVAL_KEYS,
    REPORT_EPOCH,
    REPORT_PREFIX,
    SELECTION_SCORE,
    SPLIT_TEST,
    SPLIT_VALIDATION,
    TRAIN_CE_LOSS,
    TRAIN_FREQ_LOSS,
    TRAIN_LEARNING_RATE,
    TRAIN_LOSS,
    TRAIN_TIME_LOSS,
    metric_name,
)

SearchKind = Literal["tpe", "grid", "one_at_a_time"]
# Set through `seeds` / `protocol`, never as swept parameters.
RESERVED_PATHS = {"train.seed": "seeds", "train.protocol": "protocol"}
# Keys of a Tune trial config besides the swept parameters.
VARIANT_KEY = "variant"
SEED_KEY = "seed"
POINT_KEY = "point"
CHECKPOINT_PATH = "model.checkpoint"  # a file: resolved and checked before Ray starts
BASE_POINT = "base"
# Grids larger than this are validated value by value instead of point by point.
MAX_POINTS_CHECKED = 2000
# An `int` domain with at most this many values has each value checked against the config.
MAX_INT_VALUES_CHECKED = 1000
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SCALARS = (str, int, float, bool, type(None))


def known_metrics(protocol: str) -> tuple[str, ...]:
    """Metric names a trial reports under `protocol` (what `metric:` may name)."""
    splits = [SPLIT_TEST] + ([SPLIT_VALIDATION] if protocol in VALIDATION_PROTOCOLS else [])
    names = [SELECTION_SCORE, REPORT_EPOCH, EPOCH]
    names += [metric_name(REPORT_PREFIX, key) for key in EVAL_KEYS]
    names += [metric_name(split, key) for split in splits for key in EVAL_KEYS]
    names += [TRAIN_LOSS, TRAIN_CE_LOSS, TRAIN_TIME_LOSS, TRAIN_FREQ_LOSS, TRAIN_LEARNING_RATE]
    return tuple(names)


# ---------------------------------------------------------------------------------------------
# The parsed space


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
        return self.is_group or not all(isinstance(v, _SCALARS) for v in self.values)

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
class SchedulerSpec:
    """Trial scheduler: `none` (run every trial to the end) or ASHA early stopping."""

    kind: Literal["none", "asha"] = "none"
    grace_period: int = field(default=1, metadata=field_rule(minimum=1, note="(epochs)"))
    # keep 1/reduction_factor of trials at each rung
    reduction_factor: float = field(default=2.0, metadata=field_rule(above=1))
    # epochs of the longest trial; None: the base config's num_epochs
    max_t: int | None = field(default=None, metadata=field_rule(minimum=1))


@dataclass(frozen=True)
class ReseedSpec:
    """Seed-robust selection: after the search, the top_k configurations run again on `seeds`
    and the best mean over all their seeds is exported."""

    top_k: int = field(metadata=field_rule(minimum=1))
    seeds: tuple[int, ...] = field(metadata=field_rule(minimum=0, non_empty=True, distinct=True))


@dataclass(frozen=True)
class ResourceSpec:
    """Resources of one trial (fractional GPUs pack several trials on one device)."""

    cpu: float = field(default=1.0, metadata=field_rule(minimum=0))
    gpu: float = field(default=0.0, metadata=field_rule(minimum=0))
    # Ray custom resources
    custom: dict[str, float] = field(default_factory=dict, metadata=field_rule(above=0))

    def as_dict(self) -> dict[str, float]:
        """{"cpu": .., "gpu": .., custom...} for tune.with_resources."""
        return {"cpu": self.cpu, "gpu": self.gpu, **self.custom}


@dataclass(frozen=True)
class DomainSpec:
    """What one parameter sweeps: exactly one of these (checked by `_parse_parameter`)."""

    choice: tuple[Any, ...] | None = None  # values; tpe samples, grid and one_at_a_time list
    grid: tuple[Any, ...] | None = None  # values visited in full (search grid / one_at_a_time)
    uniform: tuple[float, float] | None = None  # [low, high]
    loguniform: tuple[float, float] | None = None  # [low, high], low > 0
    int: tuple[builtins.int, builtins.int] | None = None  # [low, high], both included


@dataclass(frozen=True)
class VariantSpec:
    """One base config of a sweep with variants (e.g. a Table 2 row)."""

    base: str | None = None  # run config YAML (relative to the space file); None: top-level base
    base_overrides: dict[str, Any] | None = None  # config path (or nested mapping) -> value


_DOMAIN_EXAMPLE = " | ".join(f"{{{f.name}: ...}}" for f in dataclasses.fields(DomainSpec))


@dataclass(frozen=True)
class SpaceDocument:
    """A search-space file as written (search_spaces/README.md); `load_search_space` turns it
    into a SearchSpace. Types and per-field rules are checked by lungsrad.config.parse_typed."""

    name: str | None = None  # None: the file's stem
    description: str = ""
    base: str | None = None  # run config YAML; None: the defaults
    base_overrides: dict[str, Any] | None = None
    variants: dict[str, VariantSpec | str | None] | None = None  # name -> base path or spec
    parameters: dict[str, DomainSpec] | None = field(
        default=None, metadata=field_rule(example=_DOMAIN_EXAMPLE)
    )
    search: SearchKind = "tpe"
    search_seed: int = field(default=0, metadata=field_rule(minimum=0))
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    num_samples: int = field(default=1, metadata=field_rule(minimum=1))
    max_concurrent_trials: int | None = field(default=None, metadata=field_rule(minimum=1))
    resources: ResourceSpec = field(
        default_factory=ResourceSpec, metadata=field_rule(example="{cpu: 1, gpu: 0.25}")
    )
    seeds: tuple[int, ...] = field(
        default=(0,), metadata=field_rule(minimum=0, non_empty=True, distinct=True)
    )
    protocol: Literal["paper", "validated", "foldwise", "disjoint"] | None = None  # None: base
    metric: str = SELECTION_SCORE
    mode: Literal["max", "min"] = "max"
    max_failures: int = field(
        default=2, metadata=field_rule(minimum=-1, note="(-1: retry forever)")
    )
    reseed: ReseedSpec | None = field(
        default=None, metadata=field_rule(example="{top_k: 3, seeds: [1, 2]}")
    )
    # The backbone is meant to be fine-tuned from pretrained weights: the driver refuses a base
    # config without model.checkpoint ("none" asks for a random initialisation on purpose).
    requires_pretrained: bool = False


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

    # -- derived ---------------------------------------------------------------------------

    @property
    def has_variants(self) -> bool:
        """More than one base config (e.g. the Table 2 rows)."""
        return len(self.variants) > 1

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

    def param_space(self) -> dict[str, Any]:
        """The Ray Tune param space (needs Ray)."""
        from ray import tune

        space: dict[str, Any] = {}
        if self.has_variants:
            names = list(self.variants)
            space[VARIANT_KEY] = (
                tune.choice(names) if self.search == "tpe" else tune.grid_search(names)
            )
        if self.search == "one_at_a_time":
            space[POINT_KEY] = tune.grid_search(self.points())
        else:
            for parameter in self.parameters:
                space[parameter.name] = _tune_domain(parameter, search=self.search)
        space[SEED_KEY] = (
            tune.grid_search(list(self.seeds)) if len(self.seeds) > 1 else self.seeds[0]
        )
        return space


def display_label(label: str) -> str:
    """A value label shortened for reading (mlflow_tracking.values.display_value: the one
    display precision of run names, console, summary and report); display only."""
    from mlflow_tracking.values import display_value

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


def _tune_domain(parameter: Parameter, *, search: str) -> Any:
    from ray import tune

    if parameter.is_discrete:
        values = list(parameter.tune_values)
        return tune.grid_search(values) if search == "grid" else tune.choice(values)
    assert parameter.low is not None and parameter.high is not None
    if parameter.kind == "uniform":
        return tune.uniform(parameter.low, parameter.high)
    if parameter.kind == "loguniform":
        return tune.loguniform(parameter.low, parameter.high)
    return tune.randint(int(parameter.low), int(parameter.high) + 1)  # upper bound exclusive


# ---------------------------------------------------------------------------------------------
# Loading and validation


class _Locator:
    """Line numbers of the keys of a YAML document (for error messages)."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines: dict[tuple[str, ...], int] = {}
        try:
            node = yaml.compose(text)
        except yaml.YAMLError:
            node = None
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode) and len(prefix) < 3:
            for key_node, value_node in node.value:
                key = (*prefix, str(key_node.value))
                self.lines[key] = key_node.start_mark.line + 1
                self._walk(value_node, key)

    def where(self, keys: Sequence[str]) -> str:
        """ "FILE:LINE" of the deepest of `keys` found in the document ("FILE" when none)."""
        for depth in range(len(keys), 0, -1):
            line = self.lines.get(tuple(keys[:depth]))
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)

    def error(self, keys: Sequence[str], message: str) -> UserError:
        """UserError "FILE:LINE: message" with the line of the deepest known key."""
        return UserError(f"{self.where(keys)}: {message}")


def load_search_space(
    path: str | Path,
    *,
    data_root: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """Reads and validates a search-space YAML file.

    Args:
        path: the YAML file.
        data_root: dataset folder to set as data.root of every base config (the --data flag).
        overrides: config path -> value set on every base config, over the file's own (the
            --split-file and --set flags).

    Raises:
        FileNotFoundError: the file or a base config is missing.
        UserError: one line "FILE:LINE: what is wrong and what to do".
    """
    path = Path(path)
    text, raw, locate = _read_document(path)
    try:
        document: SpaceDocument = parse_typed(SpaceDocument, _expand_shorthands(raw))
    except SchemaError as error:
        raise locate.error(error.keys, str(error)) from None

    name = path.stem if document.name is None else document.name
    if not _NAME_PATTERN.match(name):
        raise locate.error(["name"], f"name must be letters, digits, '_', '-' or '.', got {name!r}")
    variants = _load_variants(document, path, locate, data_root=data_root, overrides=overrides)
    protocols = {config.train.protocol for config in variants.values()}
    if len(protocols) > 1:
        raise locate.error(
            ["variants"],
            f"the variants use different train.protocol {sorted(protocols)}; set "
            "`protocol:` in the search space",
        )
    protocol = protocols.pop()

    parameters = tuple(
        _resolved_checkpoints(
            _parse_parameter(str(name), domain, locate, search=document.search), locate
        )
        for name, domain in (document.parameters or {}).items()
    )
    for parameter in parameters:
        _check_values(parameter, variants, locate)
    _check_search_kind(document, parameters, locate)
    _check_resources(document.resources, locate)
    if document.reseed is not None and set(document.reseed.seeds) & set(document.seeds):
        raise locate.error(
            ["reseed", "seeds"],
            f"reseed.seeds {list(document.reseed.seeds)} repeat the search's seeds "
            f"{list(document.seeds)}; list new seeds only",
        )
    if document.metric not in known_metrics(protocol):
        close = difflib.get_close_matches(document.metric, known_metrics(protocol), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise locate.error(
            ["metric"],
            f"metric {document.metric!r} is not reported under protocol '{protocol}'{hint}",
        )
    space = SearchSpace(
        name=name,
        path=path.resolve(),
        text=text,
        variants=variants,
        parameters=parameters,
        search=document.search,
        search_seed=document.search_seed,
        scheduler=_check_scheduler(document.scheduler, variants, locate),
        num_samples=document.num_samples,
        max_concurrent_trials=document.max_concurrent_trials,
        resources=document.resources,
        seeds=document.seeds,
        protocol=protocol,
        metric=document.metric,
        mode=document.mode,
        max_failures=document.max_failures,
        description=document.description.strip(),
        reseed=document.reseed,
        requires_pretrained=document.requires_pretrained,
    )
    _check_points(space, locate)
    return space


def _read_document(path: Path) -> tuple[str, Mapping[str, Any], _Locator]:
    """The file's text, its YAML mapping and a locator of its keys' lines."""
    text, document = read_yaml_file(path, what="search space file")
    locate = _Locator(path, text)
    if not isinstance(document, Mapping):
        raise locate.error(
            [], "a search space must be a YAML mapping (see search_spaces/README.md)"
        )
    return text, document, locate


def _expand_shorthands(document: Mapping[str, Any]) -> dict[str, Any]:
    """The short forms the README allows, written out: `seeds: 3` is `seeds: [3]`;
    `scheduler: asha` is `{kind: asha}`; a scheduler mapping without `kind` is ASHA."""
    expanded = dict(document)
    seeds = expanded.get("seeds")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        expanded["seeds"] = [seeds]
    scheduler = expanded.get("scheduler")
    if scheduler is None or isinstance(scheduler, str):
        expanded["scheduler"] = {"kind": "none" if scheduler is None else scheduler}
    elif isinstance(scheduler, Mapping) and "kind" not in scheduler:
        expanded["scheduler"] = {"kind": "asha", **scheduler}
    return expanded


def _check_search_kind(
    document: SpaceDocument, parameters: tuple[Parameter, ...], locate: _Locator
) -> None:
    """What each search kind needs of seeds, parameters and num_samples."""
    if document.search == "tpe":
        if len(document.seeds) > 1:
            raise locate.error(
                ["seeds"],
                "search 'tpe' samples one seed per configuration: give one seed and "
                "train the best config on more seeds with tuning/final.py --seeds ...",
            )
        if not parameters:
            raise locate.error(["parameters"], "search 'tpe' needs at least one parameter")
    if document.search == "one_at_a_time" and document.num_samples != 1:
        raise locate.error(
            ["num_samples"],
            "search 'one_at_a_time' visits each listed value once: set "
            "num_samples to 1 and use `seeds` for repeats",
        )


def _check_scheduler(
    scheduler: SchedulerSpec, variants: Mapping[str, ExperimentConfig], locate: _Locator
) -> SchedulerSpec:
    """ASHA's bounds against the epochs (max_t defaults to the longest base config's)."""
    if scheduler.kind == "none":
        if scheduler != SchedulerSpec():
            raise locate.error(["scheduler"], "scheduler 'none' takes no settings")
        return scheduler
    max_epochs = max(config.train.num_epochs for config in variants.values())
    max_t = max_epochs if scheduler.max_t is None else scheduler.max_t
    if max_t < scheduler.grace_period:
        raise locate.error(
            ["scheduler", "max_t"],
            f"scheduler.max_t must be >= grace_period ({scheduler.grace_period}), got {max_t}",
        )
    if max_t > max_epochs:
        raise locate.error(
            ["scheduler", "max_t"],
            f"scheduler.max_t ({max_t}) exceeds train.num_epochs "
            f"({max_epochs}); trials never get that far",
        )
    return dataclasses.replace(scheduler, max_t=max_t)


def _check_resources(resources: ResourceSpec, locate: _Locator) -> None:
    if resources.cpu == 0 and resources.gpu == 0:
        raise locate.error(["resources"], "resources: a trial needs some cpu or gpu")
    if resources.gpu > 1 and resources.gpu != int(resources.gpu):
        raise locate.error(
            ["resources", "gpu"],
            f"resources.gpu above 1 must be a whole number of GPUs, got {resources.gpu}",
        )
    for key in resources.custom:
        if key.lower() in ("cpu", "gpu", "memory"):
            raise locate.error(["resources", "custom"], f"'{key}' is not a custom resource")


def _flatten_overrides(
    values: Mapping[str, Any] | None, locate: _Locator, where: list[str]
) -> dict[str, Any]:
    """Dotted-path overrides from a mapping that may nest ({train: {seed: 1}} == train.seed)."""
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, Mapping):
                walk(value, f"{path}.")
            else:
                flat[path] = value

    walk(values or {}, "")
    for path in flat:
        try:
            check_config_path(path)
        except ValueError as error:
            raise locate.error(
                [*where, path.split(".")[0]], f"{'.'.join(where)}: {error}"
            ) from None
    return flat


def _base_config(
    base: str | None,
    overrides: dict[str, Any],
    *,
    space_dir: Path,
    locate: _Locator,
    where: list[str],
) -> ExperimentConfig:
    if base is None:
        config = config_from_dict({})
    else:
        base_path = (space_dir / base).resolve() if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            raise FileNotFoundError(f"{locate.where(where)}: base config not found: {base_path}")
        config = load_config(base_path)
    try:
        config = apply_overrides(config, overrides)
    except ValueError as error:
        raise locate.error(where, f"base overrides: {error}") from None
    return _absolute_paths(config, locate=locate, where=where)


def _absolute_paths(
    config: ExperimentConfig, *, locate: _Locator, where: list[str]
) -> ExperimentConfig:
    """The config with a relative `data.root`, `data.split_file` and `model.checkpoint` resolved
    against the
    directory the sweep runs from (a trial runs in its own working directory), the checkpoint
    checked before any trial starts."""
    resolved: dict[str, Any] = {}
    for key in ("root", "split_file"):
        value = getattr(config.data, key)
        if value is not None and not Path(value).expanduser().is_absolute():
            resolved[f"data.{key}"] = str(Path(value).expanduser().resolve())
    if checkpoint_file(config.model) is not None:
        resolved["model.checkpoint"] = _checkpoint_file(
            config.model.checkpoint, where=f"{locate.where(where)}: {'.'.join(where)}"
        )
    return apply_overrides(config, resolved) if resolved else config


def _load_variants(
    document: SpaceDocument,
    path: Path,
    locate: _Locator,
    *,
    data_root: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, ExperimentConfig]:
    top_overrides = _flatten_overrides(document.base_overrides, locate, ["base_overrides"])
    if "train.seed" in top_overrides:
        raise locate.error(
            ["base_overrides"], "set train.seed through `seeds:`, not base_overrides"
        )
    extra: dict[str, Any] = {}
    if document.protocol is not None:
        extra["train.protocol"] = document.protocol
    if data_root is not None:
        extra["data.root"] = str(Path(data_root).expanduser().resolve())
    for key, value in (overrides or {}).items():
        try:
            check_config_path(key)
        except ValueError as error:
            raise UserError(f"--set {key}: {error}") from None
        extra[key] = value

    if document.variants is None:
        where = ["base" if document.base is not None else "base_overrides"]
        config = _base_config(
            document.base,
            {**top_overrides, **extra},
            space_dir=path.parent,
            locate=locate,
            where=where,
        )
        return {BASE_POINT: config}
    if not document.variants:
        raise locate.error(["variants"], "variants must name at least one base config")
    variants: dict[str, ExperimentConfig] = {}
    for name, listed in document.variants.items():
        where = ["variants", name]
        if not _NAME_PATTERN.match(name) or name == BASE_POINT:
            raise locate.error(where, f"variant name {name!r} must be a word other than 'base'")
        spec = listed if isinstance(listed, VariantSpec) else VariantSpec(base=listed)
        own = _flatten_overrides(spec.base_overrides, locate, [*where, "base_overrides"])
        if "train.seed" in own:
            raise locate.error(where, "set train.seed through `seeds:`, not base_overrides")
        variants[name] = _base_config(
            spec.base if spec.base is not None else document.base,
            {**top_overrides, **own, **extra},
            space_dir=path.parent,
            locate=locate,
            where=where,
        )
    return variants


def _checkpoint_file(value: Any, *, where: str) -> Any:
    """A checkpoint path resolved against the directory the sweep runs in (trials run in their
    own working directories), checked before any trial starts; None and "none" (a random start)
    stay as they are."""
    if value is None or str(value).strip().lower() == RANDOM_INIT_CHECKPOINT:
        return value
    path = Path(str(value)).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"{where}: model.checkpoint not found: {path} (relative paths are read from the "
            "directory the sweep runs in; give the file with --set model.checkpoint=PATH, or "
            "'none' to train from a random start)"
        )
    return str(path)


def _resolved_checkpoints(parameter: Parameter, locate: _Locator) -> Parameter:
    """The parameter with every `model.checkpoint` it sets (a listed value or a group's entry)
    as an absolute, existing file, as `_absolute_paths` does for the base configs."""
    where = f"{locate.where(['parameters', parameter.name])}: parameter '{parameter.name}'"
    if parameter.is_group:
        values = tuple(
            {
                path: _checkpoint_file(item, where=where) if path == CHECKPOINT_PATH else item
                for path, item in value.items()
            }
            for value in parameter.values
        )
    elif parameter.name == CHECKPOINT_PATH and parameter.is_discrete:
        values = tuple(_checkpoint_file(value, where=where) for value in parameter.values)
    else:
        return parameter
    return dataclasses.replace(parameter, values=values)


def _parse_parameter(name: str, domain: DomainSpec, locate: _Locator, *, search: str) -> Parameter:
    where = ["parameters", name]
    given = [(f.name, getattr(domain, f.name)) for f in dataclasses.fields(domain)]
    given = [(kind, values) for kind, values in given if values is not None]
    if len(given) != 1:
        raise locate.error(where, f"parameter '{name}' needs exactly one domain: {_DOMAIN_EXAMPLE}")
    if name in RESERVED_PATHS:
        raise locate.error(where, f"'{name}' is set by `{RESERVED_PATHS[name]}:`, not swept")
    kind, values = given[0]
    if kind in ("choice", "grid"):
        return _parse_listed(name, kind, values, locate, where, search=search)
    return _parse_range(name, kind, values, locate, where)


def _parse_listed(
    name: str,
    kind: str,
    domain: tuple[Any, ...],
    locate: _Locator,
    where: list[str],
    *,
    search: str,
) -> Parameter:
    """A choice or grid domain: plain values, or groups (several paths per value)."""
    if not domain:
        raise locate.error(where, f"parameter '{name}': {kind} needs a non-empty list of values")
    if search == "tpe" and kind == "grid":
        raise locate.error(
            where,
            f"parameter '{name}': 'grid' domains need search 'grid' or "
            "'one_at_a_time'; use 'choice' with tpe",
        )
    is_group = all(isinstance(value, Mapping) for value in domain)
    if is_group:
        labels = [_group_label(value) for value in domain]
        for value in domain:
            paths = [path for path in value if path != "label"]
            if not paths:
                raise locate.error(where, f"parameter '{name}': a group value sets no path")
            for path in paths:
                if path in RESERVED_PATHS:
                    raise locate.error(
                        where,
                        f"parameter '{name}': '{path}' is set by "
                        f"`{RESERVED_PATHS[path]}:`, not swept",
                    )
                try:
                    check_config_path(path)
                except ValueError as error:
                    raise locate.error(where, f"parameter '{name}': {error}") from None
    else:
        try:
            check_config_path(name)
        except ValueError as error:
            raise locate.error(where, f"parameter '{name}': {error}") from None
        if any(isinstance(value, Mapping) for value in domain):
            raise locate.error(
                where,
                f"parameter '{name}': mix of mappings and plain values; a group "
                "(several paths per value) needs a mapping for every value",
            )
        labels = [value if isinstance(value, str) else json.dumps(value) for value in domain]
    if len(set(labels)) != len(labels):
        raise locate.error(where, f"parameter '{name}': {kind} lists a value twice")
    return Parameter(
        name=name,
        kind=kind,
        values=tuple(_freeze(value) for value in domain),
        labels=tuple(str(label) for label in labels),
        is_group=is_group,
    )


def _parse_range(
    name: str, kind: str, domain: tuple[float, float], locate: _Locator, where: list[str]
) -> Parameter:
    """A [low, high] domain (uniform, loguniform, int) of a number setting."""
    annotation = _check_path(name, locate, where)
    low, high = domain
    if not low < high:
        raise locate.error(
            where, f"parameter '{name}': {kind} bounds must satisfy low < high, got [{low}, {high}]"
        )
    if kind == "loguniform" and low <= 0:
        raise locate.error(
            where, f"parameter '{name}': loguniform needs low > 0 (it samples log-space), got {low}"
        )
    base_types = _number_types(annotation)
    if kind == "int":
        if int not in base_types:
            raise locate.error(where, f"parameter '{name}' is not an integer setting; use uniform")
    elif float not in base_types:
        raise locate.error(
            where,
            f"parameter '{name}' is not a number setting"
            + ("; use int: [low, high] for integers" if int in base_types else ""),
        )
    return Parameter(name=name, kind=kind, low=low, high=high)


def _check_path(name: str, locate: _Locator, where: list[str]) -> Any:
    try:
        return check_config_path(name)
    except ValueError as error:
        raise locate.error(where, f"parameter '{name}': {error}") from None


def _number_types(annotation: Any) -> set[type]:
    args = typing.get_args(annotation) or (annotation,)
    return {arg for arg in args if arg in (int, float)}


def _freeze(value: Any) -> Any:
    """Tuples for lists, so parameters stay hashable and immutable."""
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, Mapping):
        return {key: _freeze(item) for key, item in value.items()}
    return value


def _group_label(value: Mapping[str, Any]) -> str:
    if "label" in value:
        return str(value["label"])
    return ",".join(
        f"{path.rsplit('.', 1)[-1]}={item if isinstance(item, str) else json.dumps(item)}"
        for path, item in value.items()
    )


def _candidate_values(parameter: Parameter) -> list[Any]:
    """Values to type-check: every listed value, int ranges in full when small, else bounds."""
    if parameter.is_discrete:
        return list(parameter.tune_values)
    assert parameter.low is not None and parameter.high is not None
    if parameter.kind == "int":
        count = int(parameter.high) - int(parameter.low) + 1
        if count <= MAX_INT_VALUES_CHECKED:
            return list(range(int(parameter.low), int(parameter.high) + 1))
        return [int(parameter.low), int(parameter.high)]
    low, high = float(parameter.low), float(parameter.high)
    middle = math.sqrt(low * high) if parameter.kind == "loguniform" else (low + high) / 2
    return [low, middle, high]


def _check_values(
    parameter: Parameter, variants: Mapping[str, ExperimentConfig], locate: _Locator
) -> None:
    where = ["parameters", parameter.name]
    for variant, base in variants.items():
        for value in _candidate_values(parameter):
            try:
                apply_overrides(base, parameter.overrides(value))
            except ValueError as error:
                on = f" on variant '{variant}'" if len(variants) > 1 else ""
                raise locate.error(
                    where,
                    f"parameter '{parameter.name}' value {parameter.label(value)}{on} is "
                    f"not a valid config: {error}",
                ) from None


def _iterate_grid(space: SearchSpace) -> Iterator[dict[str, Any]]:
    discrete = [p for p in space.parameters if p.is_discrete]
    for combination in itertools.product(*(p.tune_values for p in discrete)):
        overrides: dict[str, Any] = {}
        for parameter, value in zip(discrete, combination, strict=True):
            overrides.update(parameter.overrides(value))
        yield overrides


def _check_points(space: SearchSpace, locate: _Locator) -> None:
    """Every point one_at_a_time or grid visits is a valid config (joint constraints too)."""
    if space.search == "one_at_a_time":
        for parameter in space.parameters:
            if not parameter.is_discrete and parameter.kind != "int":
                raise locate.error(
                    ["parameters", parameter.name],
                    f"parameter '{parameter.name}': "
                    "one_at_a_time needs listed values (choice, grid or int)",
                )
        combos: Iterator[dict[str, Any]] = iter(
            space.resolve({POINT_KEY: point}).overrides for point in space.points()
        )
        limit = None
    elif space.search == "grid":
        combos = _iterate_grid(space)
        limit = MAX_POINTS_CHECKED
    else:
        return
    for index, overrides in enumerate(combos):
        if limit is not None and index >= limit:
            break
        for variant, base in space.variants.items():
            try:
                apply_overrides(base, overrides)
            except ValueError as error:
                on = f" on variant '{variant}'" if space.has_variants else ""
                shown = ", ".join(
                    f"{k}={json.dumps(v) if isinstance(v, (list, tuple)) else v}"
                    for k, v in overrides.items()
                    if k != "train.seed"
                )
                raise locate.error(
                    ["parameters"], f"the point {{{shown}}}{on} is not a valid config: {error}"
                ) from None


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
    if space.reseed is not None:
        summary["sweep.reseed.top_k"] = space.reseed.top_k
        summary["sweep.reseed.seeds"] = list(space.reseed.seeds)
    summary.update(
        {f"sweep.scheduler.{k}": v for k, v in dataclasses.asdict(space.scheduler).items()}
    )
    summary.update({f"sweep.resources.{k}": v for k, v in space.resources.as_dict().items()})
    return summary
