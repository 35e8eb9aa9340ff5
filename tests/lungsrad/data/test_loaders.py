"""Splits: the official train/test split and the seeded, patient-disjoint validation carve-out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lungsrad.config import DataConfig
from lungsrad.data.features import FeatureSet, build_feature_set
from lungsrad.data.loaders import official_patient_overlap, split_indices, validation_patients


def _feature_set(patients_and_splits: list[tuple[str, str, int]]) -> FeatureSet:
    """A FeatureSet without audio: (patient, official split, number of cycles) per patient."""
    patient_ids, splits = [], []
    for patient, split, count in patients_and_splits:
        patient_ids += [patient] * count
        splits += [split] * count
    n = len(patient_ids)
    return FeatureSet(
        features=torch.zeros((n, 2, 2), dtype=torch.float16),
        labels=torch.arange(n) % 4,
        patient_ids=tuple(patient_ids),
        recordings=tuple(f"{p}_1b1_Al_sc_Meditron" for p in patient_ids),
        official_split=tuple(splits),
        fingerprint="test",
    )


TWENTY_TRAIN_TEN_TEST = [(str(100 + i), "train", 1 + i % 4) for i in range(20)] + [
    (str(200 + i), "test", 2) for i in range(10)
]


def _patients(feature_set: FeatureSet, indices: np.ndarray) -> set[str]:
    return {feature_set.patient_ids[i] for i in indices}


def test_paper_protocol_is_the_official_split() -> None:
    feature_set = _feature_set(TWENTY_TRAIN_TEN_TEST)
    splits = split_indices(feature_set, protocol="paper", validation_fraction=0.2, seed=0)
    assert set(splits) == {"train", "test"}
    official = np.asarray(feature_set.official_split)
    np.testing.assert_array_equal(splits["train"], np.flatnonzero(official == "train"))
    np.testing.assert_array_equal(splits["test"], np.flatnonzero(official == "test"))
    assert splits["train"].dtype == np.int64


def test_validated_protocol_is_patient_disjoint_and_covers_everything() -> None:
    feature_set = _feature_set(TWENTY_TRAIN_TEN_TEST)
    splits = split_indices(feature_set, protocol="validated", validation_fraction=0.2, seed=0)
    assert set(splits) == {"train", "val", "test"}
    everything = np.concatenate([splits["train"], splits["val"], splits["test"]])
    assert sorted(everything.tolist()) == list(range(len(feature_set)))
    train, val, test = (_patients(feature_set, splits[k]) for k in ("train", "val", "test"))
    assert len(val) == 4  # round(0.2 * 20 train patients)
    assert not (train & val) and not (train & test) and not (val & test)
    assert all(feature_set.official_split[i] == "train" for i in splits["val"])
    for key in splits:
        assert np.all(np.diff(splits[key]) > 0)


def test_validation_draw_is_seeded() -> None:
    feature_set = _feature_set(TWENTY_TRAIN_TEN_TEST)
    draws = [validation_patients(feature_set, validation_fraction=0.2, seed=s) for s in range(6)]
    assert draws[0] == validation_patients(feature_set, validation_fraction=0.2, seed=0)
    assert len({tuple(d) for d in draws}) > 1


def test_patients_shared_with_test_are_never_validation_patients() -> None:
    feature_set = _feature_set([("1", "train", 3), ("2", "train", 3), ("2", "test", 1)])
    assert official_patient_overlap(feature_set) == ["2"]
    for seed in range(5):
        assert validation_patients(feature_set, validation_fraction=0.5, seed=seed) == ["1"]


def test_split_errors() -> None:
    feature_set = _feature_set(TWENTY_TRAIN_TEN_TEST)
    with pytest.raises(ValueError, match="protocol must be one of paper, validated"):
        split_indices(feature_set, protocol="random", validation_fraction=0.2, seed=0)
    with pytest.raises(ValueError, match=r"validation_fraction must be in \(0, 1\)"):
        split_indices(feature_set, protocol="validated", validation_fraction=1.0, seed=0)
    lonely = _feature_set([("1", "train", 3), ("2", "test", 3)])
    with pytest.raises(ValueError, match="needs at least 2 official-train patients"):
        split_indices(lonely, protocol="validated", validation_fraction=0.2, seed=0)
    no_test = _feature_set([("1", "train", 3), ("2", "train", 3)])
    with pytest.raises(ValueError, match="0 test cycles"):
        split_indices(no_test, protocol="paper", validation_fraction=0.2, seed=0)


def test_splits_of_real_synthetic_features(synthetic_root: Path, tmp_path: Path) -> None:
    config = DataConfig(cache_dir=str(tmp_path / "cache"), segment_seconds=2.0, num_mel_bins=32)
    feature_set = build_feature_set(config, synthetic_root, show_progress=False)
    assert official_patient_overlap(feature_set) == []
    splits = split_indices(feature_set, protocol="validated", validation_fraction=0.25, seed=1)
    groups = [_patients(feature_set, splits[k]) for k in ("train", "val", "test")]
    assert all(groups) and not (groups[0] & groups[1] or groups[0] & groups[2])
    assert not groups[1] & groups[2]
