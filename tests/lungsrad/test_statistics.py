"""Intervals on known inputs: the t quantile against printed t tables, a mean interval and paired
differences whose bounds are computed by hand below, and the paired bootstrap's limits; fewer
than three values give no interval, and a bounded metric's interval is clipped and marked."""

from __future__ import annotations

import math

import pytest

from lungsrad.metrics import REPORT_SPECIFICITY, metric_range
from lungsrad.statistics import (
    MIN_INTERVAL_COUNT,
    format_interval,
    mean_interval,
    paired_bootstrap,
    paired_difference,
    t_quantile,
)


@pytest.mark.parametrize(
    ("confidence", "degrees_of_freedom", "expected"),
    [  # two-sided critical values from a printed t table
        (0.95, 1, 12.706),
        (0.95, 2, 4.303),
        (0.95, 4, 2.776),
        (0.95, 9, 2.262),
        (0.95, 30, 2.042),
        (0.90, 4, 2.132),
        (0.99, 5, 4.032),
    ],
)
def test_t_quantile_matches_the_table(
    confidence: float, degrees_of_freedom: int, expected: float
) -> None:
    assert t_quantile(confidence, degrees_of_freedom) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="confidence"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.95, 0)


def test_mean_interval_by_hand() -> None:
    # 60..64: mean 62, s = sqrt(10 / 4) = 1.58114, half = 2.776445 * 1.58114 / sqrt(5) = 1.96324
    interval = mean_interval([60.0, 61.0, 62.0, 63.0, 64.0])
    assert interval.count == 5
    assert interval.mean == pytest.approx(62.0)
    assert interval.std == pytest.approx(1.58114, abs=1e-5)
    assert (interval.low, interval.high) == pytest.approx((60.03676, 63.96324), abs=1e-4)
    assert format_interval(interval) == "62.00 ± 1.58 [60.04, 63.96]"


def test_one_seed_has_no_spread_and_nan_is_left_out() -> None:
    single = mean_interval([61.06, math.nan])
    assert single.count == 1 and single.mean == pytest.approx(61.06)
    assert math.isnan(single.std) and math.isnan(single.low) and math.isnan(single.high)
    assert format_interval(single) == "61.06 (1 seed)"  # never "± 0.00"
    assert format_interval(mean_interval([])) == "n/a"


def test_paired_difference_within_noise_by_hand() -> None:
    # differences 1, 2, 0.5: mean 1.16667, s = sqrt(0.58333) = 0.76376,
    # half = 4.302653 * 0.76376 / sqrt(3) = 1.89731 -> [-0.73064, 3.06397]: contains 0
    before = {0: 60.0, 1: 61.0, 2: 62.0, 7: 70.0}  # seed 7 has no partner: left out
    after = {0: 61.0, 1: 63.0, 2: 62.5, 3: 99.0}
    step = paired_difference(before, after)
    assert step.seeds == (0, 1, 2)
    assert step.differences == pytest.approx((1.0, 2.0, 0.5))
    assert step.interval.mean == pytest.approx(1.16667, abs=1e-5)
    assert (step.interval.low, step.interval.high) == pytest.approx((-0.73064, 3.06397), abs=1e-4)
    assert step.verdict == "within noise"


def test_paired_difference_that_is_real_by_hand() -> None:
    # differences 2.0, 2.2, 1.8, 2.1, 1.9: mean 2, s = sqrt(0.025) = 0.158114,
    # half = 2.776445 * 0.158114 / sqrt(5) = 0.19632 -> [1.80368, 2.19632]
    before = {seed: 60.0 + seed for seed in range(5)}
    after = {seed: before[seed] + d for seed, d in enumerate([2.0, 2.2, 1.8, 2.1, 1.9])}
    step = paired_difference(before, after)
    assert (step.interval.low, step.interval.high) == pytest.approx((1.80368, 2.19632), abs=1e-4)
    assert step.verdict == "better"
    assert paired_difference(after, before).verdict == "worse"
    assert 1.8 <= step.bootstrap_low <= step.bootstrap_high <= 2.2


def test_paired_bootstrap_limits() -> None:
    assert paired_bootstrap([1.5, 1.5, 1.5]) == pytest.approx((1.5, 1.5))
    low, high = paired_bootstrap([0.0, 10.0, 5.0], resamples=2000)
    assert 0.0 <= low < high <= 10.0
    assert all(math.isnan(v) for v in paired_bootstrap([3.0]))
    assert paired_difference({0: 1.0}, {0: 2.0}).verdict.startswith("unknown")


def test_two_seeds_give_no_interval_never_an_impossible_or_tight_one() -> None:
    # Issue 25: two seeds printed Sp 85.71 [-95.80, 267.23] (t = 12.7), and a paired bootstrap
    # over two seeds [-1.92, +0.00] (its three possible means), as if they said something.
    assert MIN_INTERVAL_COUNT == 3
    specificity = mean_interval([100.0, 71.42], bounds=metric_range(REPORT_SPECIFICITY))
    assert specificity.count == 2 and specificity.std == pytest.approx(20.2092, abs=1e-4)
    assert not specificity.has_interval and math.isnan(specificity.low)
    assert format_interval(specificity) == "85.71 ± 20.21 (n=2: no interval)"
    assert all(math.isnan(v) for v in paired_bootstrap([-1.92, 0.0]))
    step = paired_difference({0: 60.0, 1: 61.0}, {0: 58.08, 1: 61.0})
    assert math.isnan(step.bootstrap_low) and math.isnan(step.bootstrap_high)
    assert step.verdict == "unknown (n=2: fewer than 3 paired seeds)"


def test_a_bounded_metric_keeps_its_interval_inside_its_range_and_says_so() -> None:
    # 100, 100, 90: mean 96.667, s = 5.7735, half = 4.302653 * 5.7735 / sqrt(3) = 14.3422
    # -> [82.32, 111.01], clipped to [82.32, 100].
    interval = mean_interval([100.0, 100.0, 90.0], bounds=(0.0, 100.0))
    assert interval.clipped and interval.high == 100.0
    assert interval.low == pytest.approx(82.3245, abs=1e-4)
    assert format_interval(interval) == "96.67 ± 5.77 [82.32, 100.00] (clipped to 0-100)"
    inside = mean_interval([60.0, 61.0, 62.0], bounds=(0.0, 100.0))
    assert not inside.clipped and "clipped" not in format_interval(inside)
    unbounded = mean_interval([100.0, 100.0, 90.0])
    assert unbounded.high == pytest.approx(111.0089, abs=1e-4) and not unbounded.clipped
