"""tuning/results.py: outcomes from Tune's results, the best configuration (mean over seeds),
never-overwriting exports, and the Table-1 statistics."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import write_tiny_space

from lungsrad.metrics import EPOCH, REPORT_SCORE
from tuning.paired import (
    points_against_base,
    points_against_base_markdown,
)
from tuning.result_keys import FAILURE_KEY, best_metric_name
from tuning.results import (
    BEST_CONFIG_FILE,
    TrialOutcome,
    choose_best,
    collect_outcomes,
    export_best_config,
    read_selection_record,
    selection_record,
    table1_metrics,
    write_superseding_text,
)
from tuning.search_space import POINT_KEY, SearchSpace, load_search_space

ALPHA = "method.patch_mix.alpha"


@pytest.fixture
def space(tmp_path: Path) -> SearchSpace:
    path = write_tiny_space(
        tmp_path / "results.yaml",
        data=tmp_path / "data",
        parameters={ALPHA: {"grid": [0.5, 2.0]}},
        search="grid",
        seeds=[0, 1],
    )
    return load_search_space(path)


def _outcome(
    space: SearchSpace, alpha: float, seed: int, best: float, *, status: str = "done"
) -> TrialOutcome:
    return TrialOutcome(
        trial_id=f"t_{alpha}_{seed}",
        resolved=space.resolve({ALPHA: alpha, "seed": seed}),
        status=status,
        epochs=2,
        best_value=best,
        last={REPORT_SCORE: best},
    )


def test_the_best_configuration_has_the_best_mean_over_seeds(space: SearchSpace) -> None:
    outcomes = [
        _outcome(space, 0.5, 0, 60.0),  # mean 50: one great seed, one poor
        _outcome(space, 0.5, 1, 40.0),
        _outcome(space, 2.0, 0, 55.0),  # mean 54
        _outcome(space, 2.0, 1, 53.0),
        _outcome(space, 0.5, 2, 99.0, status="failed"),  # failed trials never count
    ]
    best = choose_best(outcomes, mode="max")
    assert best is not None and best.mean_value == pytest.approx(54.0)
    assert best.config.method.patch_mix.alpha == 2.0 and best.representative.resolved.seed == 0
    lowest = choose_best(outcomes, mode="min")
    assert lowest is not None and lowest.mean_value == pytest.approx(50.0)


def test_no_finite_value_means_no_best(space: SearchSpace) -> None:
    assert choose_best([_outcome(space, 0.5, 0, math.nan)], mode="max") is None
    assert choose_best([], mode="max") is None


def test_a_new_export_supersedes_an_earlier_one_kept_as_partial(tmp_path: Path) -> None:
    path = tmp_path / "best.yaml"
    assert write_superseding_text(path, "a: 1\n") == path
    assert write_superseding_text(path, "a: 1\n") == path  # same text: nothing kept aside
    assert list(tmp_path.glob("best.partial-*")) == []
    same_time = (1_800_000_000, 1_800_000_000)
    os.utime(path, same_time)
    write_superseding_text(path, "a: 2\n")
    os.utime(path, same_time)  # both earlier files from the same second: a second partial name
    write_superseding_text(path, "a: 3\n")
    assert path.read_text() == "a: 3\n"
    kept = sorted(tmp_path.glob("best.partial-*.yaml"), key=lambda p: len(p.name))
    assert [p.read_text() for p in kept] == ["a: 1\n", "a: 2\n"]
    assert kept[1].name.endswith("-2.yaml")


def test_best_config_is_the_complete_resolved_config(space: SearchSpace, tmp_path: Path) -> None:
    best = choose_best([_outcome(space, 2.0, 0, 50.0)], mode="max")
    assert best is not None
    record = selection_record(best, metric="best/x", reseeded=False)
    path = export_best_config(best, tmp_path, header="line one\nline two", record=record)
    assert path == tmp_path / BEST_CONFIG_FILE
    text = path.read_text()
    assert text.startswith("# line one\n# line two\n")
    assert yaml.safe_load(text)["method"]["patch_mix"]["alpha"] == 2.0
    assert read_selection_record(path) == record


@dataclass
class StandInResult:
    """The attributes of ray.tune's Result that collect_outcomes reads."""

    path: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    error: Exception | None = None


def test_outcomes_from_tune_results(space: SearchSpace, tmp_path: Path) -> None:
    best_name = best_metric_name(space.metric)
    results = [
        StandInResult(
            str(tmp_path / "trial_b_00001"),
            {ALPHA: 2.0, "seed": 1},
            {EPOCH: 2, best_name: 51.0, REPORT_SCORE: 49.0},
        ),
        StandInResult(
            str(tmp_path / "trial_a_00000"),
            {ALPHA: 0.5, "seed": 0},
            {EPOCH: 1, best_name: math.nan},
            error=RuntimeError("worker died\ntraceback ..."),
        ),
        StandInResult(
            str(tmp_path / "trial_c_00002"),
            {ALPHA: 0.5, "seed": 1},
            {EPOCH: 0, best_name: math.nan, FAILURE_KEY: "non-finite loss: at step 2"},
        ),
    ]
    outcomes = collect_outcomes(results, space)
    assert [o.trial_id for o in outcomes] == ["a_00000", "b_00001", "c_00002"]  # sorted
    assert [o.status for o in outcomes] == ["failed", "done", "failed"]
    assert outcomes[0].error == "worker died"
    assert outcomes[2].error == "non-finite loss: at step 2"
    assert outcomes[1].best_value == 51.0 and outcomes[1].report_score == 49.0


def test_table1_statistics_use_done_seeds_only(space: SearchSpace) -> None:
    outcomes = [
        _outcome(space, 0.5, 0, 40.0),
        _outcome(space, 0.5, 1, 50.0),
        _outcome(space, 0.5, 2, 0.0, status="failed"),
    ]
    metrics = table1_metrics(outcomes)
    assert metrics[f"{REPORT_SCORE}_mean"] == 45.0
    assert metrics[f"{REPORT_SCORE}_std"] == pytest.approx(math.sqrt(50.0))
    # Two seeds have no interval (t = 12.7 would give 45 -+ 63.53, outside 0-100): NaN.
    assert math.isnan(metrics[f"{REPORT_SCORE}_ci95_low"])
    assert math.isnan(metrics[f"{REPORT_SCORE}_ci95_high"])


def test_each_point_against_the_base_paired_by_seed(tmp_path: Path) -> None:
    """One-at-a-time points minus the base point on the seeds both finished: an interval that
    excludes 0 matters, one that holds it is within noise, two pairs give no interval."""
    temperature = "method.patch_mix.temperature"
    space = load_search_space(
        write_tiny_space(
            tmp_path / "oat.yaml",
            data=tmp_path / "data",
            base={"method": {"patch_mix": {"mode": "dual", "temperature": 0.06}}},
            parameters={temperature: {"grid": [0.03, 0.1, 0.3]}},
            search="one_at_a_time",
            seeds=[1, 2, 3],
        )
    )
    points = space.points()
    base = {1: 60.0, 2: 62.0, 3: 61.0}
    shifts = {  # per point: score - base per seed (None: the seed did not finish)
        1: {1: -2.0, 2: -2.5, 3: -1.5},
        2: {1: 1.0, 2: -1.0, 3: 0.5},
        3: {1: 0.5, 2: 0.7, 3: None},
    }
    outcomes = []
    for index, point in enumerate(points):
        for seed, score in base.items():
            shift = 0.0 if index == 0 else shifts[index][seed]
            outcomes.append(
                TrialOutcome(
                    trial_id=f"t{index}_{seed}",
                    resolved=space.resolve({POINT_KEY: point, "seed": seed}),
                    status="done" if shift is not None else "failed",
                    epochs=2,
                    best_value=score,
                    last={REPORT_SCORE: score + (shift or 0.0)},
                )
            )
    rows = points_against_base(space, outcomes)
    assert [row.name for row in rows] == [f"{temperature}={t}" for t in ("0.03", "0.1", "0.3")]
    assert [row.verdict for row in rows] == ["matters", "within noise", "too few seeds"]
    assert rows[0].difference.interval.mean == pytest.approx(-2.0)
    assert rows[2].difference.seeds == (1, 2)
    table = points_against_base_markdown(space, outcomes)
    assert f"| {temperature}=0.03 | [1, 2, 3] | -2.00, -2.50, -1.50 | -2.00 |" in table
    assert "| **matters** |" in table
    two_pairs = "| [1, 2] | +0.50, +0.70 | +0.60 | n=2: no interval | too few seeds |"
    assert f"| {temperature}=0.3 {two_pairs}" in table
    grid = load_search_space(
        write_tiny_space(
            tmp_path / "grid.yaml",
            data=tmp_path / "data",
            parameters={temperature: {"grid": [0.03, 0.1]}},
            search="grid",
        )
    )
    assert points_against_base_markdown(grid, []) == ""
