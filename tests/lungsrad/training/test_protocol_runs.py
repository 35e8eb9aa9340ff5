"""Training under 'foldwise' and 'disjoint' on real synthetic wavs with chosen patients and devices:
the splits a run uses, per-device and per-class metrics in metrics.jsonl, result.json and the
evaluation, and the bad inputs `lungsrad train` refuses (exit 2, one line) before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lungsrad.cli import main
from lungsrad.config import dump_config
from lungsrad.data.features import build_feature_set
from lungsrad.data.synthetic import SyntheticRecordingSpec, write_synthetic_dataset
from lungsrad.metrics import (
    CLASS_NAMES,
    DEVICE_KEYS,
    REPORT_PREFIX,
    SCORE,
    SELECTION_SCORE,
    SPLIT_TEST,
    SPLIT_VALIDATION,
    device_metric_name,
    metric_name,
    recall_metric_name,
    scores_from_confusion,
)
from lungsrad.training import evaluate_checkpoint, run_experiment
from lungsrad.training.checkpoints import BEST_FILE
from tests.cli_errors import assert_one_line_error

# Patient 218 is on both official sides on purpose (as in ICBHI); the scan warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:.*appear in both official train and test")

# Fold 1 (test): 101 and 218 (Meditron, Litt3200); the other folds train: no AKGC417L or LittC2SE
# cycle is tested, so those devices must be absent from every test metric.
LAYOUT = [
    SyntheticRecordingSpec("101", "Meditron", "test"),  # fold 1
    SyntheticRecordingSpec("218", "Litt3200", "train"),  # fold 1, on both official sides
    SyntheticRecordingSpec("218", "Meditron", "test"),
    SyntheticRecordingSpec("156", "AKGC417L", "train"),  # fold 0
    SyntheticRecordingSpec("105", "Meditron", "train"),  # fold 2
    SyntheticRecordingSpec("103", "LittC2SE", "train"),  # fold 3
    SyntheticRecordingSpec("102", "Meditron", "test"),  # fold 4
    SyntheticRecordingSpec("109", "Litt3200", "test"),  # fold 4
]


@pytest.fixture(scope="module")
def layout_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("protocol_layout")
    write_synthetic_dataset(root, seed=2, layout=LAYOUT)
    return root


@pytest.fixture(scope="module")
def foldwise_run(tmp_path_factory, make_tiny_config, layout_root):
    config = make_tiny_config(data__root=str(layout_root), train__protocol="foldwise", data__fold=1)
    features = build_feature_set(config.data, show_progress=False)
    output_dir = tmp_path_factory.mktemp("foldwise_run")
    result = run_experiment(
        config, output_dir=output_dir, feature_set=features, show_progress=False
    )
    return config, features, output_dir, result


def test_foldwise_run_tests_on_the_fold_and_selects_on_validation(foldwise_run) -> None:
    _, features, output_dir, result = foldwise_run
    assert set(result.info.split_sizes) == {"train", "val", "test"}
    test_cycles = sum(p in ("101", "218") for p in features.patient_ids)
    assert result.info.split_sizes["test"] == test_cycles
    for row in result.history:
        assert row[SELECTION_SCORE] == row[metric_name(SPLIT_VALIDATION, SCORE)]
    assert "selected on the validation split" in result.format_text()


def test_device_and_class_metrics_in_every_output(foldwise_run) -> None:
    _, features, output_dir, result = foldwise_run
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    saved = json.loads((output_dir / "result.json").read_text())
    tested = {"Meditron", "Litt3200"}
    for row in rows:
        for device in tested:
            for key in DEVICE_KEYS:
                assert device_metric_name(SPLIT_TEST, device, key) in row
        for name in CLASS_NAMES:
            assert recall_metric_name(SPLIT_TEST, name) in row
        for device in ("AKGC417L", "LittC2SE"):  # no test cycles: absent, never 0
            assert not any(f"/device/{device}/" in key for key in row if key.startswith("test/"))
    assert set(saved["device_confusion"]) == tested
    assert set(result.device_confusion) == tested
    # The per-device matrices split the test matrix, and the report's device scores are theirs.
    total = sum(np.asarray(m) for m in saved["device_confusion"].values())
    np.testing.assert_array_equal(total, np.asarray(saved["confusion"]))
    for device, matrix in saved["device_confusion"].items():
        expected = scores_from_confusion(np.asarray(matrix))
        for key in DEVICE_KEYS:
            value = saved["report"][device_metric_name(REPORT_PREFIX, device, key)]
            assert value == (pytest.approx(expected[key]) if np.isfinite(expected[key]) else None)
    assert "Meditron" in result.format_text()

    report = evaluate_checkpoint(
        output_dir / BEST_FILE, feature_set=features, show_progress=False, device="cpu"
    )
    assert set(report.device_confusion) == tested
    assert report.num_cycles == result.info.split_sizes["test"]
    assert device_metric_name(SPLIT_TEST, "Meditron", SCORE) in report.metrics


def test_disjoint_run_keeps_shared_patients_on_one_side(make_tiny_config, layout_root, tmp_path):
    config = make_tiny_config(
        data__root=str(layout_root), train__protocol="disjoint", train__num_epochs=1
    )
    features = build_feature_set(config.data, show_progress=False)
    result = run_experiment(config, output_dir=tmp_path, feature_set=features, show_progress=False)
    # 218 has one recording per side; its larger side by cycles (or test on a tie) gets it all.
    official_test = sum(s == "test" for s in features.official_split)
    moved = [
        (p, s)
        for p, s in zip(features.patient_ids, features.official_split, strict=True)
        if p == "218"
    ]
    train_218 = sum(s == "train" for _, s in moved)
    test_218 = len(moved) - train_218
    expected_test = official_test + (train_218 if test_218 >= train_218 else -test_218)
    assert result.info.split_sizes["test"] == expected_test
    assert set(result.info.split_sizes) == {"train", "val", "test"}


# ---------------------------------------------------------------------------------------------
# Bad input through the CLI: one line, exit 2, nothing trained


def _train_cli(tmp_path: Path, config, data: Path) -> int:
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(config), encoding="utf-8")
    return main(
        ["train", "--config", str(path), "--data", str(data), "--out", str(tmp_path / "out")]
    )


def test_cli_refuses_patients_missing_from_the_fold_list(make_tiny_config, tmp_path, capsys):
    data = tmp_path / "data"
    write_synthetic_dataset(
        data,
        seed=0,
        layout=[
            SyntheticRecordingSpec("101", "Meditron", "train"),
            SyntheticRecordingSpec("900", "Meditron", "test"),
        ],
    )
    config = make_tiny_config(data__root=str(data), train__protocol="foldwise", data__fold=1)
    code = _train_cli(tmp_path, config, data)
    assert_one_line_error((code, capsys.readouterr().err), "not in RespireNet's fold list", "900")
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_cli_refuses_a_fold_without_test_cycles(make_tiny_config, layout_root, tmp_path, capsys):
    # Patients of folds 0 and 1 only; fold 2 would test on nothing.
    data = tmp_path / "data"
    write_synthetic_dataset(
        data,
        seed=0,
        layout=[
            SyntheticRecordingSpec("156", "AKGC417L", "train"),
            SyntheticRecordingSpec("101", "Meditron", "test"),
        ],
    )
    config = make_tiny_config(data__root=str(data), train__protocol="foldwise", data__fold=2)
    code = _train_cli(tmp_path, config, data)
    assert_one_line_error((code, capsys.readouterr().err), "data.fold 2 has no test cycles")
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_cli_refuses_fold_without_foldwise(make_tiny_config, layout_root, tmp_path, capsys):
    config = make_tiny_config(data__root=str(layout_root))
    path = tmp_path / "run.yaml"
    values = yaml.safe_load(dump_config(config))
    values["data"]["fold"] = 3
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    code = main(["train", "--config", str(path), "--out", str(tmp_path / "out")])
    assert_one_line_error((code, capsys.readouterr().err), "data.fold is 3", "'paper'")
