"""tuning/results.py: outcomes from Tune's results, the best configuration (mean over seeds),
never-overwriting exports, and the Table-1 statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import write_tiny_space

from lungsrad.metrics import EPOCH, REPORT_SCORE
from tuning.results import (
    BEST_CONFIG_FILE,
    TrialOutcome,
    choose_best,
    collect_outcomes,
    export_best_config,
    read_selection_record,
    selection_record,
    table1_metrics,
    write_unique_text,
)
from tuning.search_space import SearchSpace, load_search_space
from tuning.trainable import FAILURE_KEY, best_metric_name

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


def test_exports_never_replace_a_different_file(tmp_path: Path) -> None:
    first = write_unique_text(tmp_path / "best.yaml", "a: 1\n")
    assert write_unique_text(tmp_path / "best.yaml", "a: 1\n") == first  # same text: same file
    second = write_unique_text(tmp_path / "best.yaml", "a: 2\n")
    assert second == tmp_path / "best-2.yaml"
    assert first.read_text() == "a: 1\n" and second.read_text() == "a: 2\n"


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
