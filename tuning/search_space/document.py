"""The search-space document (search_spaces/*.yaml) as typed sections: the reserved keys of a
Tune trial config, the metrics a sweep may optimise, the scheduler, reseed, resources, domain
and variant sections. The format is documented in search_spaces/README.md.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from lungsrad.config import VALIDATION_PROTOCOLS
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
from lungsrad.schema import field_rule

SearchKind = Literal["tpe", "grid", "one_at_a_time"]
SamplerKind = Literal["tpe", "nsga2"]  # Optuna's sampler of a `search: tpe` space
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
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SCALARS = (str, int, float, bool, type(None))


def known_metrics(protocol: str) -> tuple[str, ...]:
    """Metric names a trial reports under `protocol` (what `metric:` may name)."""
    splits = [SPLIT_TEST] + ([SPLIT_VALIDATION] if protocol in VALIDATION_PROTOCOLS else [])
    names = [SELECTION_SCORE, REPORT_EPOCH, EPOCH]
    names += [metric_name(REPORT_PREFIX, key) for key in EVAL_KEYS]
    names += [metric_name(split, key) for split in splits for key in EVAL_KEYS]
    names += [TRAIN_LOSS, TRAIN_CE_LOSS, TRAIN_TIME_LOSS, TRAIN_FREQ_LOSS, TRAIN_LEARNING_RATE]
    return tuple(names)


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective of a multi-objective space (`metrics: [{name: ..., mode: max}, ...]`)."""

    name: str  # a metric the protocol reports (known_metrics), or cost/device_seconds (min)
    mode: Literal["max", "min"] = "max"


@dataclass(frozen=True)
class ConstraintSpec:
    """A bound a Pareto point must keep (`constraints: [{name: ..., op: ">=", value: 70}]`)."""

    name: str  # a metric the protocol reports
    op: Literal[">=", "<="]
    value: float

    def violation(self, value: float) -> float:
        """How far `value` breaks the bound (<= 0: kept; Optuna's constraints_func convention)."""
        return self.value - value if self.op == ">=" else value - self.value

    def describe(self) -> str:
        """e.g. "report/specificity >= 70"."""
        return f"{self.name} {self.op} {self.value:g}"


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
    """What one parameter sweeps: exactly one of these (checked by `parse_parameter`)."""

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


DOMAIN_EXAMPLE = " | ".join(f"{{{f.name}: ...}}" for f in dataclasses.fields(DomainSpec))


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
        default=None, metadata=field_rule(example=DOMAIN_EXAMPLE)
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
    metric: str | None = None  # None: SELECTION_SCORE (or the first of `metrics`)
    mode: Literal["max", "min"] | None = None  # None: max
    # Several objectives (docs/sweeps.md "Multi-objective"): not with `metric` / `mode`.
    metrics: tuple[ObjectiveSpec, ...] | None = field(
        default=None,
        metadata=field_rule(
            example="[{name: selection/icbhi_score, mode: max}, {name: report/sensitivity}]"
        ),
    )
    constraints: tuple[ConstraintSpec, ...] = field(
        default=(), metadata=field_rule(example='[{name: report/specificity, op: ">=", value: 70}]')
    )
    sampler: SamplerKind = "tpe"
    max_failures: int = field(
        default=2, metadata=field_rule(minimum=-1, note="(-1: retry forever)")
    )
    reseed: ReseedSpec | None = field(
        default=None, metadata=field_rule(example="{top_k: 3, seeds: [1, 2]}")
    )
    # The backbone is meant to be fine-tuned from pretrained weights: the driver refuses a base
    # config without model.checkpoint ("none" asks for a random initialisation on purpose).
    requires_pretrained: bool = False
