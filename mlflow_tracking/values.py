"""MLflow values from lungsrad's: config values as param strings, finite numeric metrics, and
swept values as people read them (DISPLAY_DIGITS significant digits).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

# MLflow's longest param value.
_MAX_PARAM_VALUE_LENGTH = 6000

# Significant digits of a swept value wherever a person reads it (run names, console, summary,
# report, plots); the exact value stays in the run's params and the lungsrad.values tag.
DISPLAY_DIGITS = 3


def display_value(label: str) -> str:
    """A value label as people read it: numbers to DISPLAY_DIGITS significant digits
    ("0.03666490418612682" -> "0.0367"), whole numbers and words unchanged."""
    try:
        number = float(label)
    except (TypeError, ValueError):
        return str(label)
    if not math.isfinite(number) or (number.is_integer() and "." not in str(label)):
        return str(label)
    return f"{number:.{DISPLAY_DIGITS}g}"


def param_value(value: Any) -> str:
    """A config value as an MLflow param string (lists as YAML-like text, None as 'null')."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)
    return text[:_MAX_PARAM_VALUE_LENGTH]


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric metrics only; NaN stays (MLflow stores it), inf is dropped (SQL stores reject it)."""
    kept: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isinf(value):
            continue
        kept[key] = float(value)
    return kept
