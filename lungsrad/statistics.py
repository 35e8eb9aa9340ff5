"""Intervals for comparing scores over seeds: the Student-t interval of a mean, and paired
differences of two variants trained on the same seeds (t interval and paired bootstrap).

Pure Python + numpy (no scipy): the t quantile inverts the exact t CDF of integer degrees of
freedom (Abramowitz & Stegun 26.7.3-4) by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000


def _t_central_probability(t: float, degrees_of_freedom: int) -> float:
    """P(|T| <= t) for Student's t with integer degrees of freedom (A&S 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(degrees_of_freedom))
    cosine_sq = math.cos(theta) ** 2
    if degrees_of_freedom % 2 == 1:
        term, series = 1.0, 0.0
        if degrees_of_freedom > 1:
            series = 1.0
            for k in range(3, degrees_of_freedom, 2):  # (2*4*..*(k-1)) / (1*3*..*k) cos^(k-1)
                term *= (k - 1) / k * cosine_sq
                series += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    term, series = 1.0, 1.0
    for k in range(2, degrees_of_freedom, 2):  # (1*3*..*(k-1)) / (2*4*..*k) cos^k
        term *= (k - 1) / k * cosine_sq
        series += term
    return math.sin(theta) * series


def t_quantile(confidence: float, degrees_of_freedom: int) -> float:
    """The two-sided critical value t with P(|T| <= t) = confidence (e.g. 2.776 for 95 %, 4 df)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {degrees_of_freedom}")
    low, high = 0.0, 1.0
    while _t_central_probability(high, degrees_of_freedom) < confidence:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if _t_central_probability(middle, degrees_of_freedom) < confidence:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


# Fewer values than this get no interval: with two the t quantile is 12.7, so two seeds give
# intervals far outside a score's range, and a bootstrap of two values has three possible
# means, which looks tight and means nothing.
MIN_INTERVAL_COUNT = 3


@dataclass(frozen=True)
class MeanInterval:
    """Mean of n values with its sample std (ddof 1) and Student-t interval; std is NaN for fewer
    than two values (one seed says nothing about the spread), the interval NaN for fewer than
    MIN_INTERVAL_COUNT. With `bounds` the interval is clipped to the metric's range (`clipped`
    says whether it was)."""

    mean: float
    std: float
    low: float
    high: float
    count: int
    confidence: float = CONFIDENCE
    bounds: tuple[float, float] | None = None  # the metric's range, e.g. (0, 100) for percent
    clipped: bool = False  # low or high was moved to a bound

    @property
    def has_interval(self) -> bool:
        """True when there is an interval (enough finite values)."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN without an interval)."""
        return 0.5 * (self.high - self.low)

    def contains(self, value: float) -> bool:
        """True when `value` lies inside the interval (False without an interval)."""
        return bool(self.low <= value <= self.high)


def mean_interval(
    values: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> MeanInterval:
    """Mean, sample std and Student-t interval of the finite values (NaN entries are left out).

    Args:
        values: one value per seed (or per paired seed).
        confidence: the interval's coverage.
        bounds: the metric's range (lungsrad.metrics.metric_range); the interval is clipped to
            it, since a mean of percentages cannot leave 0-100.
    """
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    count = int(finite.size)
    if count == 0:
        return MeanInterval(math.nan, math.nan, math.nan, math.nan, 0, confidence, bounds)
    mean = float(finite.mean())
    if count == 1:
        return MeanInterval(mean, math.nan, math.nan, math.nan, 1, confidence, bounds)
    std = float(finite.std(ddof=1))
    if count < MIN_INTERVAL_COUNT:
        return MeanInterval(mean, std, math.nan, math.nan, count, confidence, bounds)
    half = t_quantile(confidence, count - 1) * std / math.sqrt(count)
    low, high = mean - half, mean + half
    clipped = False
    if bounds is not None:
        clipped = low < bounds[0] or high > bounds[1]
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return MeanInterval(mean, std, low, high, count, confidence, bounds, clipped)


def _bound(value: float) -> str:
    return f"{value:g}"


def format_interval(interval: MeanInterval, *, digits: int = 2) -> str:
    """'mean ± std [low, high]', with '(clipped to 0-100)' when the interval met the metric's
    range; 'mean (1 seed)' without a spread; 'mean ± std (n=2: no interval)' below
    MIN_INTERVAL_COUNT values; 'n/a' without values."""
    if interval.count == 0:
        return "n/a"
    if interval.count == 1:
        return f"{interval.mean:.{digits}f} (1 seed)"
    spread = f"{interval.mean:.{digits}f} ± {interval.std:.{digits}f}"
    if not interval.has_interval:
        return f"{spread} (n={interval.count}: no interval)"
    text = f"{spread} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"
    if interval.clipped and interval.bounds is not None:
        low, high = interval.bounds
        text += f" (clipped to {_bound(low)}-{_bound(high)})"
    return text


@dataclass(frozen=True)
class PairedDifference:
    """`after - before` over the seeds both variants finished."""

    seeds: tuple[Any, ...]  # seeds, or (seed, fold) pairs for runs over folds
    differences: tuple[float, ...]  # per seed, in `seeds` order
    interval: MeanInterval  # Student-t interval of the mean difference
    bootstrap_low: float  # percentile interval of the paired bootstrap (NaN: < 3 pairs)
    bootstrap_high: float

    @property
    def verdict(self) -> str:
        """'better' / 'worse' when the t interval excludes 0, else 'within noise' (or 'unknown'
        with fewer than MIN_INTERVAL_COUNT pairs, which have no interval)."""
        if not self.interval.has_interval:
            count = self.interval.count
            return f"unknown (n={count}: fewer than {MIN_INTERVAL_COUNT} paired seeds)"
        if self.interval.low > 0:
            return "better"
        if self.interval.high < 0:
            return "worse"
        return "within noise"


def paired_bootstrap(
    differences: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of the mean paired difference (seeds resampled with replacement);
    NaN for fewer than MIN_INTERVAL_COUNT differences."""
    values = np.asarray(differences, dtype=np.float64)
    if values.size < MIN_INTERVAL_COUNT:
        return math.nan, math.nan
    generator = np.random.default_rng(seed)
    picks = generator.integers(0, values.size, size=(resamples, values.size))
    means = values[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_difference(
    before: Mapping[Any, float],
    after: Mapping[Any, float],
    *,
    confidence: float = CONFIDENCE,
) -> PairedDifference:
    """Pairs two variants' scores by key: seed, or (seed, fold) (keys both finished with a finite
    score) and returns
    the per-seed differences `after - before` with their t and bootstrap intervals."""
    seeds = tuple(
        sorted(
            seed
            for seed in set(before) & set(after)
            if math.isfinite(before[seed]) and math.isfinite(after[seed])
        )
    )
    differences = tuple(after[seed] - before[seed] for seed in seeds)
    low, high = paired_bootstrap(differences, confidence=confidence)
    return PairedDifference(
        seeds=seeds,
        differences=differences,
        interval=mean_interval(differences, confidence=confidence),
        bootstrap_low=low,
        bootstrap_high=high,
    )
