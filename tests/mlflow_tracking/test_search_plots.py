"""The joint-search figures as a person reads them: the best configuration marked on every slice,
categorical values as written (not '0.5'), the contour only over numeric parameters, the
importance figure saying on how many configurations it rests; ties rank in trial-id order."""

from __future__ import annotations

from lungsrad.metrics import REPORT_SCORE
from mlflow_tracking.search_analysis import build_study, group_configurations, parse_domains
from mlflow_tracking.sweep_runs import TrialPoint

SPACE = """
parameters:
  method.patch_mix.temperature: {loguniform: [0.03, 0.3]}
  method.patch_mix.alpha: {choice: [0.5, 1.0, 2.0]}
"""
PARAMETERS = ["method.patch_mix.temperature", "method.patch_mix.alpha"]


def _points() -> list[TrialPoint]:
    rows = [("t3", "0.05", "0.5", 40.0), ("t1", "0.1", "1", 55.0), ("t2", "0.2", "2", 40.0)]
    return [
        TrialPoint(
            run_id=f"run-{trial}",
            values={PARAMETERS[0]: temperature, PARAMETERS[1]: alpha},
            variant="base",
            seed=0,
            metrics={REPORT_SCORE: score},
            trial_id=trial,
        )
        for trial, temperature, alpha, score in rows
    ]


def test_ties_rank_in_trial_id_order() -> None:
    ranked = group_configurations(_points(), metric=REPORT_SCORE)
    assert [c.run_ids[0] for c in ranked] == ["run-t1", "run-t2", "run-t3"]


def test_figures_mark_the_best_unquote_categories_and_skip_a_categorical_contour(
    tmp_path, monkeypatch
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from mlflow_tracking import search_analysis

    domains = parse_domains(SPACE, PARAMETERS)
    study = build_study(group_configurations(_points(), metric=REPORT_SCORE), domains)
    figures = []
    saved = search_analysis._save

    def keep(figure, path):  # the figures as drawn, before they are closed
        figures.append((path.name, figure))
        saved(figure, path)

    monkeypatch.setattr(search_analysis, "_save", keep)
    plots = search_analysis.write_plots(
        study,
        {PARAMETERS[0]: 0.3, PARAMETERS[1]: 0.7},
        tmp_path,
        sweep="s",
        metric=REPORT_SCORE,
        domains=domains,
    )
    assert [p.name for p in plots] == ["importance.png", "slice.png"]  # alpha is categorical
    drawn = dict(figures)
    assert "3 configurations" in drawn["importance.png"].axes[0].get_title()
    slices = [axis for axis in drawn["slice.png"].axes if axis.get_title() in PARAMETERS]
    for axis in slices:
        labels = [text.get_text() for text in axis.get_legend().get_texts()]
        assert labels == ["best configuration"]
        stars = [c for c in axis.collections if c.get_label() == "best configuration"]
        assert stars[0].get_offsets()[0][1] == 55.0
    alpha_axis = next(a for a in slices if a.get_title() == PARAMETERS[1])
    ticks = [text.get_text() for text in alpha_axis.get_xticklabels()]
    assert ticks == ["0.5", "1", "2"]
    pyplot.close("all")
