"""The 'foldwise' and 'disjoint' protocols: RespireNet's shipped fold list, patient-disjoint folds
that cover every patient, the disjoint re-assignment of shared patients, per-device metrics by
hand, the inspect tables, and the bad inputs that must stop before any training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lungsrad.config import NUM_FOLDS, config_from_dict
from lungsrad.data.features import FeatureSet
from lungsrad.data.inspect import inspect_dataset
from lungsrad.data.layout import DEVICES, device_of
from lungsrad.data.loaders import split_indices
from lungsrad.data.protocols import (
    disjoint_moves,
    disjoint_splits,
    parse_fold_list,
    read_fold_list,
)
from lungsrad.data.synthetic import SyntheticRecordingSpec, write_synthetic_dataset
from lungsrad.errors import UserError
from lungsrad.metrics import (
    SCORE,
    SENSITIVITY,
    SPECIFICITY,
    class_recalls,
    confusion_by_group,
    detailed_metrics,
    device_metric_name,
    recall_metric_name,
)

FOLDS = read_fold_list()


def _feature_set(cycles: list[tuple[str, str, str]]) -> FeatureSet:
    """A FeatureSet without audio: one (patient, official split, device) per cycle."""
    n = len(cycles)
    return FeatureSet(
        features=torch.zeros((n, 2, 2), dtype=torch.float16),
        labels=torch.arange(n) % 4,
        patient_ids=tuple(patient for patient, _, _ in cycles),
        recordings=tuple(f"{patient}_1b1_Al_sc_{device}" for patient, _, device in cycles),
        official_split=tuple(split for _, split, _ in cycles),
        fingerprint="test",
    )


def _patients(feature_set: FeatureSet, indices: np.ndarray) -> set[str]:
    return {feature_set.patient_ids[i] for i in indices}


# ---------------------------------------------------------------------------------------------
# The fold list


def test_the_shipped_fold_list_holds_126_patients_each_in_one_fold() -> None:
    assert len(FOLDS) == 126
    assert sorted(FOLDS, key=int) == [str(p) for p in range(101, 227)]  # every ICBHI patient
    assert set(FOLDS.values()) == set(range(NUM_FOLDS))
    sizes = [sum(1 for fold in FOLDS.values() if fold == f) for f in range(NUM_FOLDS)]
    assert sizes == [26, 25, 25, 25, 25]
    # Spot checks against RespireNet's file: its first and last lines, and the shared patients.
    assert (FOLDS["158"], FOLDS["135"], FOLDS["156"], FOLDS["218"]) == (0, 4, 0, 1)


def test_a_malformed_fold_list_names_its_line() -> None:
    with pytest.raises(UserError, match=r"folds.txt:2: expected 'PATIENT FOLD'"):
        parse_fold_list("101 0\n102 7\n", source="folds.txt")
    with pytest.raises(UserError, match=r"folds.txt:3: patient 101 is listed twice"):
        parse_fold_list("101 0\n\n101 1\n", source="folds.txt")


# ---------------------------------------------------------------------------------------------
# foldwise


def _whole_database_feature_set() -> FeatureSet:
    """Every ICBHI patient with 1-3 cycles, official split by parity, devices mixed."""
    cycles = []
    for index, patient in enumerate(sorted(FOLDS, key=int)):
        split = "train" if index % 3 else "test"
        device = DEVICES[index % len(DEVICES)]
        cycles += [(patient, split, device)] * (1 + index % 3)
    return _feature_set(cycles)


def test_folds_are_patient_disjoint_and_cover_every_patient() -> None:
    feature_set = _whole_database_feature_set()
    all_patients = set(feature_set.patient_ids)
    tested: list[str] = []
    for fold in range(NUM_FOLDS):
        splits = split_indices(
            feature_set, protocol="foldwise", validation_fraction=0.2, seed=0, fold=fold
        )
        assert set(splits) == {"train", "val", "test"}
        train, val, test = (_patients(feature_set, splits[k]) for k in ("train", "val", "test"))
        assert test == {p for p, f in FOLDS.items() if f == fold}
        assert not (train & val) and not (train & test) and not (val & test)
        assert train | val | test == all_patients
        everything = np.concatenate([splits["train"], splits["val"], splits["test"]])
        assert sorted(everything.tolist()) == list(range(len(feature_set)))
        # The epoch is selected on held-out training patients, never on the test fold.
        assert len(val) == round(0.2 * len(train | val))
        tested += sorted(test)
    assert sorted(tested) == sorted(all_patients) and len(tested) == len(set(tested))


def test_foldwise_ignores_the_official_split() -> None:
    feature_set = _whole_database_feature_set()
    flipped = FeatureSet(
        **{
            **vars(feature_set),
            "official_split": tuple(
                "test" if s == "train" else "train" for s in feature_set.official_split
            ),
        }
    )
    for a, b in zip(
        split_indices(
            feature_set, protocol="foldwise", validation_fraction=0.2, seed=3, fold=2
        ).values(),
        split_indices(
            flipped, protocol="foldwise", validation_fraction=0.2, seed=3, fold=2
        ).values(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_patients_missing_from_the_fold_list_are_named() -> None:
    feature_set = _feature_set(
        [("101", "train", "Meditron"), ("900", "test", "Meditron"), ("901", "test", "Meditron")]
    )
    with pytest.raises(
        UserError, match=r"2 patient\(s\) .* not in RespireNet's fold list.*900, 901"
    ):
        split_indices(feature_set, protocol="foldwise", validation_fraction=0.2, seed=0, fold=1)


def test_a_fold_without_test_cycles_is_refused() -> None:
    # Patients of folds 0-3 only: fold 4 would test on nothing.
    cycles = [(p, "train", "Meditron") for p, f in FOLDS.items() if f < 4]
    feature_set = _feature_set(cycles)
    with pytest.raises(UserError, match=r"data.fold 4 has no test cycles: none of its 25 patients"):
        split_indices(feature_set, protocol="foldwise", validation_fraction=0.2, seed=0, fold=4)


# ---------------------------------------------------------------------------------------------
# disjoint


def test_disjoint_moves_each_shared_patient_wholly_to_its_larger_side() -> None:
    cycles = (
        [("156", "train", "AKGC417L")] * 3
        + [("156", "test", "AKGC417L")] * 5  # most cycles in test: moves to test
        + [("218", "train", "Meditron")] * 4
        + [("218", "test", "Litt3200")] * 2  # most cycles in train: moves to train
        + [("219", "train", "LittC2SE")] * 2
        + [("220", "train", "LittC2SE")] * 2
        + [("221", "train", "LittC2SE")] * 2
        + [("222", "test", "Meditron")] * 3
    )
    feature_set = _feature_set(cycles)
    moves = {
        move.patient: move
        for move in disjoint_moves(feature_set.patient_ids, feature_set.official_split)
    }
    assert set(moves) == {"156", "218"}
    assert moves["156"].side == "test" and moves["156"].cycles == {"train": 3, "test": 5}
    assert moves["218"].side == "train" and moves["218"].cycles == {"train": 4, "test": 2}

    splits = split_indices(feature_set, protocol="disjoint", validation_fraction=0.25, seed=0)
    train, val, test = (_patients(feature_set, splits[k]) for k in ("train", "val", "test"))
    assert test == {"156", "222"}
    assert "218" in train | val
    assert not (train & test) and not (val & test) and not (train & val)
    everything = np.concatenate([splits["train"], splits["val"], splits["test"]])
    assert sorted(everything.tolist()) == list(range(len(feature_set)))

    # The official split of 'paper' still has 156 and 218 on both sides.
    paper = split_indices(feature_set, protocol="paper", validation_fraction=0.25, seed=0)
    assert {"156", "218"} <= _patients(feature_set, paper["train"]) & _patients(
        feature_set, paper["test"]
    )


def test_a_tie_goes_to_test() -> None:
    patients = ["218"] * 4
    splits = ["train", "test", "train", "test"]
    assert disjoint_splits(patients, splits) == ["test"] * 4


# ---------------------------------------------------------------------------------------------
# Per-device and per-class metrics


def test_per_device_scores_by_hand() -> None:
    # Meditron: normal 0->0, 0->1, crackle 1->1, wheeze 2->0   => Sp 1/2, Se 1/2, Score 50
    # AKGC417L: normal 0->0, both 3->3, both 3->2, crackle 1->1 => Sp 1/1, Se 2/3, Score 83.33
    labels = [0, 0, 1, 2, 0, 3, 3, 1]
    predictions = [0, 1, 1, 0, 0, 3, 2, 1]
    devices = ["Meditron"] * 4 + ["AKGC417L"] * 4
    confusions = confusion_by_group(labels, predictions, devices)
    assert list(confusions) == ["AKGC417L", "Meditron"]  # no LittC2SE, no Litt3200
    overall = sum(confusions.values())
    metrics = detailed_metrics("test", overall, confusions)
    assert metrics[device_metric_name("test", "Meditron", SPECIFICITY)] == pytest.approx(50.0)
    assert metrics[device_metric_name("test", "Meditron", SENSITIVITY)] == pytest.approx(50.0)
    assert metrics[device_metric_name("test", "Meditron", SCORE)] == pytest.approx(50.0)
    assert metrics[device_metric_name("test", "AKGC417L", SPECIFICITY)] == pytest.approx(100.0)
    assert metrics[device_metric_name("test", "AKGC417L", SENSITIVITY)] == pytest.approx(200 / 3)
    assert metrics[device_metric_name("test", "AKGC417L", SCORE)] == pytest.approx(250 / 3)
    # Recall per class over both devices: normal 2/3, crackle 2/2, wheeze 0/1, both 1/2.
    assert metrics[recall_metric_name("test", "normal")] == pytest.approx(200 / 3)
    assert metrics[recall_metric_name("test", "crackle")] == pytest.approx(100.0)
    assert metrics[recall_metric_name("test", "wheeze")] == pytest.approx(0.0)
    assert metrics[recall_metric_name("test", "both")] == pytest.approx(50.0)
    assert not any("LittC2SE" in key or "Litt3200" in key for key in metrics)


def test_a_class_without_cycles_has_no_recall_number() -> None:
    recalls = class_recalls(np.array([[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    assert recalls["normal"] == 100.0 and np.isnan(recalls["wheeze"])


def test_device_of_reads_the_last_name_field() -> None:
    assert device_of("101_1b1_Al_sc_Meditron") == "Meditron"
    assert device_of("226_1b1_Pl_sc_LittC2SE") == "LittC2SE"


# ---------------------------------------------------------------------------------------------
# Config: data.fold


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"train": {"protocol": "foldwise"}, "data": {"fold": 5}}, r"data.fold must be in 0..4"),
        ({"train": {"protocol": "foldwise"}, "data": {"fold": -1}}, r"data.fold must be in 0..4"),
        ({"train": {"protocol": "foldwise"}}, r"'foldwise' needs data.fold"),
        ({"data": {"fold": 2}}, r"data.fold is 2 but train.protocol is 'paper'"),
        ({"train": {"protocol": "disjoint"}, "data": {"fold": 0}}, r"train.protocol 'foldwise'"),
    ],
)
def test_bad_fold_settings_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        config_from_dict(values)


def test_good_fold_settings_load() -> None:
    config = config_from_dict({"train": {"protocol": "foldwise"}, "data": {"fold": 4}})
    assert config.data.fold == 4
    assert config_from_dict({"train": {"protocol": "disjoint"}}).data.fold is None


# ---------------------------------------------------------------------------------------------
# Synthetic data with chosen patients and devices; inspect's device and fold tables

LAYOUT = [
    SyntheticRecordingSpec("156", "AKGC417L", "train"),  # fold 0, on both sides
    SyntheticRecordingSpec("156", "AKGC417L", "test"),
    SyntheticRecordingSpec("156", "AKGC417L", "test"),
    SyntheticRecordingSpec("101", "Meditron", "test"),  # fold 1
    SyntheticRecordingSpec("105", "Meditron", "train"),  # fold 2
    SyntheticRecordingSpec("104", "Litt3200", "test"),  # fold 3
    SyntheticRecordingSpec("103", "LittC2SE", "train"),  # fold 3
    SyntheticRecordingSpec("102", "Meditron", "train"),  # fold 4
]


@pytest.fixture(scope="module")
def layout_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    write_synthetic_dataset(root, seed=0, layout=LAYOUT)
    return root


def test_synthetic_layout_writes_the_chosen_patients_and_devices(layout_dataset: Path) -> None:
    names = sorted(path.stem for path in layout_dataset.glob("*_*_*_*_*.wav"))
    assert len(names) == len(LAYOUT)
    assert sorted((n.split("_")[0], device_of(n)) for n in names) == sorted(
        (spec.patient_id, spec.device) for spec in LAYOUT
    )
    with pytest.raises(UserError, match="device must be one of"):
        write_synthetic_dataset(
            layout_dataset / "x", seed=0, layout=[SyntheticRecordingSpec("101", "Phone", "test")]
        )


def test_inspect_reports_devices_folds_and_the_disjoint_moves(layout_dataset: Path) -> None:
    report = inspect_dataset(layout_dataset, decode_audio=False).to_dict()
    scan = {
        path.stem: path.read_text().splitlines() for path in layout_dataset.glob("*_*_*_*_*.txt")
    }
    split_of = dict(
        line.split("\t")
        for line in (layout_dataset / "ICBHI_challenge_train_test.txt").read_text().splitlines()
    )
    expected_devices: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    expected_folds = {str(f): 0 for f in range(NUM_FOLDS)}
    for name, lines in scan.items():
        split, device = split_of[name], device_of(name)
        expected_devices[split][device] = expected_devices[split].get(device, 0) + len(lines)
        expected_folds[str(FOLDS[name.split("_")[0]])] += len(lines)
    assert {
        split: {device: sum(counts.values()) for device, counts in devices.items()}
        for split, devices in report["devices"].items()
    } == expected_devices
    assert "Litt3200" not in report["devices"]["train"]  # absent, not 0
    assert set(report["folds"]) == {"0", "1", "2", "3", "4"}
    assert {fold: sum(c.values()) for fold, c in report["folds"].items()} == expected_folds
    assert report["patients_not_in_fold_list"] == []
    (move,) = report["disjoint_moves"]
    assert move["patient"] == "156" and move["to"] == "test"
    # The cycles per class add up to the split totals.
    for split, devices in report["devices"].items():
        for name in ("normal", "crackle", "wheeze", "both"):
            assert sum(c[name] for c in devices.values()) == report["splits"][split][name]


def test_inspect_plain_output_prints_both_tables(layout_dataset: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "lungsrad", "data", "inspect", str(layout_dataset)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "test Litt3200" in completed.stdout and "train Litt3200" not in completed.stdout
    assert "fold 4" in completed.stdout
    assert "disjoint: patient 156" in completed.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "lungsrad", "data", "inspect", str(layout_dataset), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert set(json.loads(as_json.stdout)["folds"]) == {"0", "1", "2", "3", "4"}
