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


@dataclass(frozen=True)
class MeanInterval:
    """Mean of n values with its sample std (ddof 1) and Student-t interval; std and interval
    are NaN for fewer than two values (one seed says nothing about the spread)."""

    mean: float
    std: float
    low: float
    high: float
    count: int
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        """Half the interval's width (NaN without an interval)."""
        return 0.5 * (self.high - self.low)

    def contains(self, value: float) -> bool:
        """True when `value` lies inside the interval (False without an interval)."""
        return bool(self.low <= value <= self.high)


def mean_interval(values: Sequence[float], *, confidence: float = CONFIDENCE) -> MeanInterval:
    """Mean, sample std and Student-t interval of the finite values (NaN entries are left out)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    count = int(finite.size)
    if count == 0:
        return MeanInterval(math.nan, math.nan, math.nan, math.nan, 0, confidence)
    mean = float(finite.mean())
    if count == 1:
        return MeanInterval(mean, math.nan, math.nan, math.nan, 1, confidence)
    std = float(finite.std(ddof=1))
    half = t_quantile(confidence, count - 1) * std / math.sqrt(count)
    return MeanInterval(mean, std, mean - half, mean + half, count, confidence)


def format_interval(interval: MeanInterval, *, digits: int = 2) -> str:
    """'mean ± std [low, high]'; 'mean (1 seed)' without a spread; 'n/a' without values."""
    if interval.count == 0:
        return "n/a"
    if interval.count == 1:
        return f"{interval.mean:.{digits}f} (1 seed)"
    return (
        f"{interval.mean:.{digits}f} ± {interval.std:.{digits}f} "
        f"[{interval.low:.{digits}f}, {interval.high:.{digits}f}]"
    )


@dataclass(frozen=True)
class PairedDifference:
    """`after - before` over the seeds both variants finished."""

    seeds: tuple[Any, ...]  # seeds, or (seed, fold) pairs for runs over folds
    differences: tuple[float, ...]  # per seed, in `seeds` order
    interval: MeanInterval  # Student-t interval of the mean difference
    bootstrap_low: float  # percentile interval of the paired bootstrap (NaN: < 2 pairs)
    bootstrap_high: float

    @property
    def verdict(self) -> str:
        """'better' / 'worse' when the t interval excludes 0, else 'within noise' (or 'unknown'
        with fewer than two pairs)."""
        if self.interval.count < 2:
            return "unknown (fewer than 2 paired seeds)"
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
    """Percentile interval of the mean paired difference (seeds resampled with replacement)."""
    values = np.asarray(differences, dtype=np.float64)
    if values.size < 2:
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
