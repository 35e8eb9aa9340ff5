"""Final runs over seeds x folds: the final space of `final.py --folds`, the mean over folds with
its interval and the per-device table on known scores, and `tuning.compare` pairing by
(seed, fold) on a real MLflow SQLite store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from sweep_helpers import TINY_BASE

from lungsrad.errors import UserError
from lungsrad.metrics import (
    REPORT_PREFIX,
    REPORT_SCORE,
    SCORE,
    SENSITIVITY,
    SPECIFICITY,
    device_metric_name,
)
from lungsrad.statistics import mean_interval, t_quantile
from mlflow_tracking.store import make_client
from mlflow_tracking.tags import PARENT_RUN_TAG, TAG_ROLE, TAG_SEED, TAG_VALUES, TAG_VARIANT
from mlflow_tracking.uri import sqlite_uri
from tuning.compare import COMPARISON_FILE, main
from tuning.final import final_space
from tuning.folds import aggregate, device_markdown, fold_and_device_metrics, folds_markdown
from tuning.results import TrialOutcome
from tuning.search_space import ResourceSpec, SearchSpace


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "best_config.yaml"
    path.write_text(yaml.safe_dump({**TINY_BASE, "data": {**TINY_BASE["data"]}}), "utf-8")
    return path


def _space(config_path: Path, folds: list[int] | None) -> SearchSpace:
    return final_space(
        config_path, seeds=[0, 1], resources=ResourceSpec(), data_root=None, folds=folds
    )


def test_final_space_over_folds_is_a_grid_of_seeds_by_folds(config_path: Path) -> None:
    space = _space(config_path, [0, 2, 4])
    assert space.protocol == "foldwise" and space.num_trials() == 6
    resolved = space.resolve({"data.fold": 2, "seed": 1})
    assert resolved.config.train.protocol == "foldwise" and resolved.config.data.fold == 2
    assert resolved.seed == 1 and resolved.values == {"data.fold": "2"}
    plain = _space(config_path, None)
    assert plain.parameters == () and plain.protocol == "paper"
    with pytest.raises(UserError, match=r"--folds must be distinct folds in 0..4, got \[1, 5\]"):
        _space(config_path, [1, 5])


def _outcome(space: SearchSpace, seed: int, fold: int, last: dict[str, float]) -> TrialOutcome:
    return TrialOutcome(
        trial_id=f"t_{seed}_{fold}",
        resolved=space.resolve({"data.fold": fold, "seed": seed}),
        status="done",
        epochs=2,
        best_value=last[REPORT_SCORE],
        last=last,
    )


MEDITRON = device_metric_name(REPORT_PREFIX, "Meditron", SCORE)
LITT3200 = device_metric_name(REPORT_PREFIX, "Litt3200", SCORE)


def test_mean_over_folds_averages_fold_means(config_path: Path) -> None:
    space = _space(config_path, [0, 1, 2])
    # Fold means over seeds: 50, 60, 70 -> mean 60, std 10 over 3 folds.
    scores = {(0, 0): 48.0, (1, 0): 52.0, (0, 1): 60.0, (1, 1): 60.0, (0, 2): 75.0, (1, 2): 65.0}
    outcomes = []
    for (seed, fold), score in scores.items():
        last = {REPORT_SCORE: score, MEDITRON: score - 10.0}
        if fold == 2:  # Litt3200 cycles only in fold 2's test patients
            last[LITT3200] = 30.0 + seed
        outcomes.append(_outcome(space, seed, fold, last))
    interval = aggregate(outcomes, REPORT_SCORE)
    half = t_quantile(0.95, 2) * 10.0 / math.sqrt(3)
    assert (interval.mean, interval.std, interval.count) == (60.0, 10.0, 3)
    assert interval.low == pytest.approx(60.0 - half)
    text = folds_markdown(outcomes)
    assert "| **mean over folds** |" in text and f"60.00 ± 10.00 [{60 - half:.2f}," in text
    assert "| 1 | [0, 1] |" in text

    devices = device_markdown(outcomes)
    rows = {line.split("|")[1].strip(): line for line in devices.splitlines() if "|" in line}
    assert set(rows) >= {"Meditron", "Litt3200"}
    assert "AKGC417L" not in rows and "LittC2SE" not in rows  # never tested: no row, not 0
    assert "| 6 |" in rows["Meditron"] and "| 2 |" in rows["Litt3200"]
    assert "30.50 (1 seed)" in rows["Litt3200"]  # one fold: its mean over 2 seeds, no spread
    metrics = fold_and_device_metrics(outcomes)
    assert metrics[f"{MEDITRON}_mean"] == pytest.approx(50.0)
    assert metrics[f"{REPORT_SCORE}_over_folds_mean"] == pytest.approx(60.0)
    assert not any("AKGC417L" in key for key in metrics)


def test_without_folds_the_device_interval_is_over_seeds(config_path: Path) -> None:
    space = _space(config_path, None)
    outcomes = [
        TrialOutcome(
            trial_id=f"t{seed}",
            resolved=space.resolve({"seed": seed}),
            status="done",
            epochs=2,
            best_value=50.0,
            last={
                REPORT_SCORE: 50.0,
                MEDITRON: value,
                device_metric_name(REPORT_PREFIX, "Meditron", SPECIFICITY): 80.0,
                device_metric_name(REPORT_PREFIX, "Meditron", SENSITIVITY): value,
            },
        )
        for seed, value in ((0, 40.0), (1, 44.0))
    ]
    assert folds_markdown(outcomes) == ""
    over_seeds = aggregate(outcomes, MEDITRON)
    assert (over_seeds.mean, over_seeds.std, over_seeds.count) == (
        42.0,
        mean_interval([40, 44]).std,
        2,
    )
    assert not over_seeds.has_interval  # two seeds: no interval
    assert "over seeds" in device_markdown(outcomes)


# ---------------------------------------------------------------------------------------------
# tuning.compare pairs by (seed, fold)


def _log_final(client, name: str, scores: dict[tuple[int, int | None], float]) -> str:
    experiment_id = client.create_experiment(f"lungsrad-final-{name}")
    parent = client.create_run(experiment_id, tags={TAG_ROLE: "final"}).info.run_id
    for (seed, fold), value in scores.items():
        values = {} if fold is None else {"data.fold": str(fold)}
        run = client.create_run(
            experiment_id,
            tags={
                PARENT_RUN_TAG: parent,
                TAG_VARIANT: "base",
                TAG_SEED: str(seed),
                TAG_VALUES: json.dumps(values),
            },
        )
        client.log_param(run.info.run_id, "name", name)
        client.log_metric(run.info.run_id, REPORT_SCORE, value)
        client.set_terminated(run.info.run_id)
    return parent


@pytest.mark.mlflow
def test_compare_pairs_finals_by_seed_and_fold(tmp_path: Path, capsys) -> None:
    client = make_client(sqlite_uri(tmp_path / "mlflow.db"))
    uri = sqlite_uri(tmp_path / "mlflow.db")
    # Fold 1 is much harder than fold 0 for both: pairing by (seed, fold) removes that.
    before = {(0, 0): 70.0, (1, 0): 71.0, (0, 1): 50.0, (1, 1): 52.0}
    after = {(0, 0): 71.0, (1, 0): 72.0, (0, 1): 51.5, (1, 1): 53.5}  # +1, +1, +1.5, +1.5
    first = _log_final(client, "regularization", before)
    second = _log_final(client, "lung_srad", after)
    out = tmp_path / "out"
    code = main(["--parent-run-id", first, second, "--tracking-uri", uri, "--out", str(out)])
    assert code == 0
    text = (out / COMPARISON_FILE).read_text()
    row = next(line for line in text.splitlines() if "regularization -> lung_srad" in line)
    assert "[(0, 0), (0, 1), (1, 0), (1, 1)]" in row
    assert "+1.00, +1.50, +1.00, +1.50" in row and "| +1.25 |" in row
    assert row.rstrip().endswith("| better |")

    # A final over folds cannot be paired with one that was not.
    third = _log_final(client, "ast_style_mix", {(0, None): 60.0, (1, None): 61.0})
    capsys.readouterr()
    assert main(["--parent-run-id", first, third, "--tracking-uri", uri, "--no-log"]) == 2
    assert "trained over folds" in capsys.readouterr().err


def test_check_splits_refuses_a_swept_fold_without_test_cycles(config_path: Path) -> None:
    import torch

    from lungsrad.data.features import FeatureSet
    from lungsrad.data.protocols import read_fold_list
    from tuning.folds import check_splits

    folds = read_fold_list()
    patients = [p for p, f in folds.items() if f in (0, 1, 2)]  # no patient of folds 3 and 4
    n = len(patients)
    features = FeatureSet(
        features=torch.zeros((n, 2, 2), dtype=torch.float16),
        labels=torch.arange(n) % 4,
        patient_ids=tuple(patients),
        recordings=tuple(f"{p}_1b1_Al_sc_Meditron" for p in patients),
        official_split=tuple("train" if i % 2 else "test" for i in range(n)),
        fingerprint="test",
    )
    check_splits(_space(config_path, [0, 1, 2]), features)  # every fold has test cycles
    with pytest.raises(UserError, match="data.fold 3 has no test cycles"):
        check_splits(_space(config_path, [0, 3]), features)
    check_splits(_space(config_path, [0, 3]), None)  # trials build their own features
