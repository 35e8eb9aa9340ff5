"""Fig. 3-style curves of a one-at-a-time sweep as a person reads them (issue 25): two seeds per
value give no interval (once Sp 85.71 [-95.80, 267.23] and a y axis from -200 % to 300 %), an
interval of three seeds is clipped to 0-100 and said to be, the y axis keeps to 0-100, and the
title stays inside the figure."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg

from lungsrad.metrics import REPORT_SCORE, REPORT_SPECIFICITY
from mlflow_tracking.sensitivity import (
    aggregate,
    curve_sections,
    parameter_figure,
    parameter_series,
)
from mlflow_tracking.sweep_runs import TrialPoint

SIGMA = "method.regularization.sigma"
# Sp per seed at each sigma: two seeds at 0.5 (the case) and three at 1 and 2.
SPECIFICITY = {"0.5": [100.0, 71.42], "1": [100.0, 100.0, 90.0], "2": [80.0, 82.0, 84.0]}


def _points() -> list[TrialPoint]:
    return [
        TrialPoint(
            run_id=f"run-{value}-{seed}",
            values={SIGMA: value},
            variant="base",
            seed=seed,
            metrics={REPORT_SPECIFICITY: sp, REPORT_SCORE: sp / 2 + 10.0},
        )
        for value, seeds in SPECIFICITY.items()
        for seed, sp in enumerate(seeds)
    ]


def test_curve_tables_show_no_interval_for_two_seeds_and_clip_at_100(tmp_path) -> None:
    lines, plots = curve_sections(
        _points(),
        [SIGMA],
        tmp_path,
        base_labels={},
        one_at_a_time=False,
        metric=REPORT_SCORE,
        sweep="paper_fig3",
    )
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert "| 85.71 ± 20.21 (n=2: no interval) |" in rows["0.5"]
    assert "| 96.67 ± 5.77 [82.32, 100.00] (clipped to 0-100) |" in rows["1"]
    assert "-95.80" not in "\n".join(lines) and plots[0].stat().st_size > 1000


def test_the_plot_keeps_to_the_score_range_and_shows_its_whole_title() -> None:
    points = _points()
    series = parameter_series(points, SIGMA, base_label=None, one_at_a_time=False)
    rows = aggregate(series, [REPORT_SPECIFICITY])
    title = f"paper_fig3: {REPORT_SPECIFICITY} vs {SIGMA} (others at the base config)"
    figure = parameter_figure(
        SIGMA, rows, series, metric=REPORT_SPECIFICITY, base_label=None, title=title
    )
    (axes,) = figure.axes
    low, high = axes.get_ylim()
    assert 0.0 <= low < high <= 100.0
    renderer = FigureCanvasAgg(figure).get_renderer()
    box = axes.title.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= figure.bbox.x1 and box.y1 <= figure.bbox.y1
    assert axes.title.get_text().replace("\n", " ") == title
