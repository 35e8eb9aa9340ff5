"""Parsing and checking one parameter's domain (listed values, ranges, checkpoint files) and the
points of a grid against ExperimentConfig's field rules; errors name the file, line and key.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml

from lungsrad.assets.paths import is_fetch_reference, resolve_reference
from lungsrad.config import (
    RANDOM_INIT_CHECKPOINT,
    ExperimentConfig,
    apply_overrides,
    check_config_path,
)
from lungsrad.errors import UserError
from tuning.search_space.document import (
    CHECKPOINT_PATH,
    DOMAIN_EXAMPLE,
    MAX_INT_VALUES_CHECKED,
    MAX_POINTS_CHECKED,
    POINT_KEY,
    RESERVED_PATHS,
    DomainSpec,
)
from tuning.search_space.space import Parameter, SearchSpace


class Locator:
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


# False while a space is read only to plan it (`sweep.py --plan`): its checkpoints need not be
# here yet (they are still resolved, and checked when the sweep runs).
_CHECK_CHECKPOINTS: ContextVar[bool] = ContextVar("check_checkpoints", default=True)


@contextmanager
def checkpoints_unchecked() -> Iterator[None]:
    """Within it, spaces load without their checkpoint files or fetched weights being there."""
    token = _CHECK_CHECKPOINTS.set(False)
    try:
        yield
    finally:
        _CHECK_CHECKPOINTS.reset(token)


def checkpoint_value(value: Any, *, where: str) -> Any:
    """A checkpoint path resolved against the directory the sweep runs in (trials run in their
    own working directories), checked before any trial starts (unless within
    `checkpoints_unchecked`); None and "none" (a random start) stay as they are."""
    if value is None or str(value).strip().lower() == RANDOM_INIT_CHECKPOINT:
        return value
    if is_fetch_reference(value):  # `fetch:NAME` stays a name; it must be fetched here
        if not _CHECK_CHECKPOINTS.get():
            return value
        try:
            resolve_reference(str(value), key="model.checkpoint")
        except UserError as error:
            raise UserError(
                f"{where}: {error}; or give the file with --set model.checkpoint=PATH, or "
                "'none' to train from a random start"
            ) from None
        return value
    path = Path(str(value)).expanduser().resolve()
    if not path.exists() and _CHECK_CHECKPOINTS.get():  # a file, or an HF DASS model folder
        raise FileNotFoundError(
            f"{where}: model.checkpoint not found: {path} (relative paths are read from the "
            "directory the sweep runs in; give the file with --set model.checkpoint=PATH, or "
            "'none' to train from a random start)"
        )
    return str(path)


def resolved_checkpoints(parameter: Parameter, locate: Locator) -> Parameter:
    """The parameter with every `model.checkpoint` it sets (a listed value or a group's entry)
    as an absolute, existing file, as `_absolute_paths` does for the base configs."""
    where = f"{locate.where(['parameters', parameter.name])}: parameter '{parameter.name}'"
    if parameter.is_group:
        values = tuple(
            {
                path: checkpoint_value(item, where=where) if path == CHECKPOINT_PATH else item
                for path, item in value.items()
            }
            for value in parameter.values
        )
    elif parameter.name == CHECKPOINT_PATH and parameter.is_discrete:
        values = tuple(checkpoint_value(value, where=where) for value in parameter.values)
    else:
        return parameter
    return dataclasses.replace(parameter, values=values)


def parse_parameter(name: str, domain: DomainSpec, locate: Locator, *, search: str) -> Parameter:
    where = ["parameters", name]
    given = [(f.name, getattr(domain, f.name)) for f in dataclasses.fields(domain)]
    given = [(kind, values) for kind, values in given if values is not None]
    if len(given) != 1:
        raise locate.error(where, f"parameter '{name}' needs exactly one domain: {DOMAIN_EXAMPLE}")
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
    locate: Locator,
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
    name: str, kind: str, domain: tuple[float, float], locate: Locator, where: list[str]
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


def _check_path(name: str, locate: Locator, where: list[str]) -> Any:
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


def check_values(
    parameter: Parameter, variants: Mapping[str, ExperimentConfig], locate: Locator
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


def check_points(space: SearchSpace, locate: Locator) -> None:
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
