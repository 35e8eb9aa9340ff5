"""lungsrad.schema: the typed YAML reader of configs and search spaces (types, field rules,
unknown keys, NaN/inf), on a document of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from lungsrad.schema import SchemaError, bounded, field_rule, parse_typed


@dataclass(frozen=True)
class _Inner:
    count: int = field(default=1, metadata=field_rule(minimum=1))


@dataclass(frozen=True)
class _Document:
    inner: _Inner | None = None
    sizes: tuple[float, ...] = field(default=(1.0,), metadata=field_rule(above=0, non_empty=True))


def test_parse_typed_builds_any_dataclass_tree():
    parsed = parse_typed(_Document, {"inner": {"count": 3}, "sizes": [2, "1e-3"]})
    assert parsed == _Document(inner=_Inner(count=3), sizes=(2.0, 0.001))


@pytest.mark.parametrize(
    ("values", "message", "keys"),
    [
        (
            {"inner": {"count": 0}},
            r"^inner\.count must be an integer >= 1, got 0$",
            ("inner", "count"),
        ),
        # a bad value inside an optional mapping names its key, not "must be mapping | null"
        (
            {"inner": {"count": "x"}},
            r"^inner\.count must be an integer, got 'x'$",
            ("inner", "count"),
        ),
        (
            {"inner": {"cont": 2}},
            r"unknown key 'inner\.cont'; did you mean 'inner\.count'\?",
            ("inner", "cont"),
        ),
        ({"sizes": []}, r"^sizes must be a non-empty list of numbers > 0, got \[\]$", ("sizes",)),
        ({"sizes": [1, float("inf")]}, r"^sizes\[1\] must be a finite number", ("sizes", "[1]")),
        ({"sizes": [1, -2]}, r"^sizes\[1\] must be a number > 0, got -2\.0$", ("sizes", "[1]")),
    ],
)
def test_parse_typed_errors_name_the_key_path(values, message, keys):
    with pytest.raises(SchemaError, match=message) as raised:
        parse_typed(_Document, values)
    assert raised.value.keys == keys


@dataclass(frozen=True)
class _Ranged:
    share: float = bounded(0.5, above=0, below=1)
    probability: float = bounded(1.0, minimum=0, maximum=1)
    rate: float = bounded(0.0, minimum=0, below=1)
    percent: float | None = bounded(None, minimum=0, below=100, note="or null")
    cap: int = bounded(3, maximum=8)


def test_bounded_fields_keep_their_defaults_and_accept_their_edges():
    assert parse_typed(_Ranged, {}) == _Ranged()
    edges = {"probability": 0, "rate": 0.0, "percent": 99.5, "cap": 8}
    assert parse_typed(_Ranged, edges) == _Ranged(probability=0.0, percent=99.5, cap=8)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"share": 1}, r"^config key 'share' must be a number in \(0, 1\), got 1\.0$"),
        ({"share": 0}, r"^config key 'share' must be a number in \(0, 1\), got 0\.0$"),
        ({"probability": 1.5}, r"^config key 'probability' must be a number in \[0, 1\], got"),
        ({"rate": 1}, r"^config key 'rate' must be a number in \[0, 1\), got 1\.0$"),
        ({"percent": 100}, r"must be a number in \[0, 100\) or null, got 100\.0$"),
        ({"cap": 9}, r"^config key 'cap' must be an integer <= 8, got 9$"),
    ],
)
def test_bounds_are_checked_once_and_named_with_the_key(values, message):
    with pytest.raises(SchemaError, match=message):
        parse_typed(_Ranged, values, noun="config key")
