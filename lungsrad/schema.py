"""The typed YAML reader shared by run configs (lungsrad.config) and search spaces
(tuning/search_space.py): frozen dataclasses built from YAML mappings, each field's type, its
bounds (`field_rule`, `bounded`), unknown keys ("did you mean") and NaN/inf checked here, once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from lungsrad.errors import UserError


class SchemaError(UserError):
    """A value its field refuses; `keys` is the path to it (to find its line in a file)."""

    def __init__(self, message: str, keys: tuple[str, ...]):
        super().__init__(message)
        self.keys = keys


class _TypeMismatch(SchemaError):
    """The value is not of the annotated type (a Union then tries its next member)."""


def field_rule(
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    non_empty: bool = False,
    distinct: bool = False,
    example: str = "",
    note: str = "",
) -> dict[str, Any]:
    """Dataclass field metadata read by `parse_typed`: numbers (also the items or values of a
    list or mapping field) >= minimum or > above, and <= maximum or < below; lists non-empty
    and/or without repeats; `example` shows the expected mapping; `note` ends the message (e.g.
    what -1 means)."""
    bounds = {"minimum": minimum, "above": above, "maximum": maximum, "below": below}
    rule = {**bounds, "non_empty": non_empty, "distinct": distinct}
    return {"rule": {**rule, "example": example, "note": note}}


def bounded(default: Any, **rule: Any) -> Any:
    """A dataclass field with `default` and the `field_rule(**rule)` its values must keep,
    e.g. `num_epochs: int = bounded(50, minimum=1)`."""
    return dataclasses.field(default=default, metadata=field_rule(**rule))


_NO_RULE: dict[str, Any] = field_rule()["rule"]


def _dotted(keys: tuple[str, ...]) -> str:
    text = ""
    for key in keys:
        text += key if key.startswith("[") or not text else f".{key}"
    return text


@dataclass(frozen=True)
class _Reader:
    """Converts YAML values to annotated types; `noun` names keys in messages."""

    noun: str  # "config key": "config key 'train.seed' must be..."; "": "seeds must be..."

    def name(self, keys: tuple[str, ...]) -> str:
        return f"{self.noun} '{_dotted(keys)}'" if self.noun else _dotted(keys)

    def mismatch(self, keys: tuple[str, ...], what: str, value: Any) -> _TypeMismatch:
        return _TypeMismatch(f"{self.name(keys)} must be {what}, got {value!r}", keys)

    def build(self, cls: Any, values: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in values:
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
                hint = f"; did you mean '{_dotted((*keys, close[0]))}'?" if close else ""
                raise SchemaError(
                    f"unknown {self.noun or 'key'} '{_dotted((*keys, str(key)))}'{hint} "
                    f"(known keys: {', '.join(fields)})",
                    (*keys, str(key)),
                )
        for key, spec in fields.items():
            required = spec.default is dataclasses.MISSING
            if required and spec.default_factory is dataclasses.MISSING and key not in values:
                raise SchemaError(f"{self.name(keys) or 'the file'} needs the key '{key}'", keys)
        kwargs = {
            key: self.inner(
                value, hints[key], (*keys, key), fields[key].metadata.get("rule", _NO_RULE)
            )
            for key, value in values.items()
        }
        return cls(**kwargs)

    def inner(self, value: Any, annotation: Any, keys: tuple[str, ...], rule: dict) -> Any:
        """`convert` of a part of a value whose own type matched: a mismatch there is final
        (a Union around the whole value must not try its next member and hide the key)."""
        try:
            return self.convert(value, annotation, keys, rule)
        except _TypeMismatch as error:
            raise SchemaError(str(error), error.keys) from None

    def convert(self, value: Any, annotation: Any, keys: tuple[str, ...], rule: dict) -> Any:
        """`value` as `annotation`; SchemaError naming the key when it is not, or breaks `rule`."""
        origin = typing.get_origin(annotation)
        if annotation is Any:
            return value
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, Mapping):
                raise self.mismatch(keys, rule["example"] or "a mapping", value)
            return self.build(annotation, value, keys)
        if origin in (Union, types.UnionType):
            return self._union(value, annotation, keys, rule)
        if origin is Literal:
            if value not in typing.get_args(annotation):
                raise self.mismatch(keys, f"one of {_type_name(annotation)}", value)
            return value
        if origin is tuple:
            return self._list(value, annotation, keys, rule)
        if origin is dict:
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise self.mismatch(keys, "a mapping of names", value)
            (_, item_type) = typing.get_args(annotation)
            return {k: self.inner(v, item_type, (*keys, k), rule) for k, v in value.items()}
        if annotation is bool:
            if not isinstance(value, bool):
                raise self.mismatch(keys, "true or false", value)
            return value
        if annotation is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.mismatch(keys, "an integer", value)
            return self._bounded(value, "an integer", keys, rule)
        if annotation is float:
            number = _float_or_none(value)
            if number is None:
                raise self.mismatch(keys, "a number", value)
            if not math.isfinite(number):
                raise SchemaError(f"{self.name(keys)} must be a finite number, got {value!r}", keys)
            return self._bounded(number, "a number", keys, rule)
        if annotation is str:
            if not isinstance(value, str):
                raise self.mismatch(keys, "a string", value)
            return value
        raise TypeError(f"unsupported annotation {annotation!r} for '{_dotted(keys)}'")

    def _union(self, value: Any, annotation: Any, keys: tuple[str, ...], rule: dict) -> Any:
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        if float in args:  # NaN/inf is refused as such, not as "the wrong type"
            number = _float_or_none(value)
            if number is not None and not math.isfinite(number):
                raise SchemaError(f"{self.name(keys)} must be a finite number, got {value!r}", keys)
        for arg in args:
            if dataclasses.is_dataclass(arg) and isinstance(value, Mapping):
                return self.build(arg, value, keys)  # its own keys' errors, not the union's
        for arg in args:
            if arg is type(None):
                continue
            try:
                return self.convert(value, arg, keys, rule)
            except _TypeMismatch:
                continue
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1 and dataclasses.is_dataclass(members[0]):
            return self.convert(value, members[0], keys, rule)  # "must be a mapping like ..."
        raise self.mismatch(keys, _type_name(annotation), value)

    def _list(self, value: Any, annotation: Any, keys: tuple[str, ...], rule: dict) -> Any:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise self.mismatch(keys, "a list", value)
        if args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise self.mismatch(keys, _type_name(annotation), value)
            items = zip(value, args, strict=True)
        else:
            items = zip(value, [args[0]] * len(value), strict=True)
        if (rule["non_empty"] and not value) or (rule["distinct"] and len(set(value)) < len(value)):
            what = " ".join(
                ["a non-empty" if rule["non_empty"] else "a", "list of"]
                + (["distinct"] if rule["distinct"] else [])
                + [{int: "integers", float: "numbers"}.get(args[0], _type_name(args[0]))]
            )
            raise SchemaError(
                f"{self.name(keys)} must be {what}{_bound_text(rule)}, got {value!r}", keys
            )
        return tuple(
            self.inner(item, item_type, (*keys, f"[{index}]"), rule)
            for index, (item, item_type) in enumerate(items)
        )

    def _bounded(self, number: Any, what: str, keys: tuple[str, ...], rule: dict) -> Any:
        if _out_of_bounds(number, rule):
            raise SchemaError(
                f"{self.name(keys)} must be {what}{_bound_text(rule)}, got {number!r}", keys
            )
        return number


def _out_of_bounds(number: Any, rule: dict[str, Any]) -> bool:
    low, above, high, below = (rule.get(k) for k in ("minimum", "above", "maximum", "below"))
    return (
        (low is not None and number < low)
        or (above is not None and number <= above)
        or (high is not None and number > high)
        or (below is not None and number >= below)
    )


def _bound_text(rule: dict[str, Any]) -> str:
    """ " >= 1", " > 0", " in [0, 1)" ... and the rule's note."""
    low, above, high, below = (rule.get(k) for k in ("minimum", "above", "maximum", "below"))
    start = f"[{low}" if low is not None else f"({above}" if above is not None else None
    end = f"{high}]" if high is not None else f"{below})" if below is not None else None
    if start is not None and end is not None:
        bound = f" in {start}, {end}"
    elif start is not None:
        bound = f" >= {low}" if low is not None else f" > {above}"
    elif end is not None:
        bound = f" <= {high}" if high is not None else f" < {below}"
    else:
        bound = ""
    return bound + (f" {rule['note']}" if rule["note"] else "")


def parse_typed(cls: Any, values: Any, *, noun: str = "", keys: tuple[str, ...] = ()) -> Any:
    """Builds the frozen dataclass `cls` from nested mappings (missing keys take defaults),
    checking every field's type and `field_rule`, unknown keys ("did you mean") and NaN/inf.

    Raises:
        SchemaError: one line naming the key (`noun` prefixes it, e.g. "config key"); its
            `keys` attribute is the path to the value.
    """
    return _Reader(noun).convert(values, cls, keys, _NO_RULE)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(value) for value in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        if args[-1] is not Ellipsis and len(set(args)) == 1:
            plural = {int: "integers", float: "numbers"}.get(args[0], _type_name(args[0]))
            return f"a list of {len(args)} {plural}"
        if args[-1] is not Ellipsis:
            return f"[{', '.join(_type_name(arg) for arg in args)}]"
        return "list" if args[0] is Any else f"list of {_type_name(args[0])}"
    if annotation is type(None):
        return "null"
    if dataclasses.is_dataclass(annotation) or origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        # YAML 1.1 reads "1e-5" (no dot) as a string; accept numeric strings explicitly.
        try:
            return float(value)
        except ValueError:
            return None
    return None


def read_yaml_file(path: str | os.PathLike[str], *, what: str) -> tuple[str, Any]:
    """(text, parsed YAML) of a file the user gave (run config, search space).

    Raises:
        FileNotFoundError: "<what> not found: PATH".
        UserError: "PATH: line N is not valid YAML (problem)".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(
            f"{path}:{where} is not valid YAML ({getattr(error, 'problem', error)})"
        ) from None
