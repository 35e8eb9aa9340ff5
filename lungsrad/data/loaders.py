"""Evaluation splits over a FeatureSet, one per protocol (docs/protocols.md): the official ICBHI
train/test split ('paper'); a seeded, patient-disjoint validation carve-out of its train side
('validated'); RespireNet's 5-fold patient split ('foldwise', test = one fold); and the official
split with its shared patients moved wholly to one side ('disjoint'). Every protocol but 'paper'
selects its epoch on a validation carve-out of its own training patients.
"""

from __future__ import annotations

import numpy as np

from lungsrad.config import PROTOCOLS
from lungsrad.data.features import FeatureSet
from lungsrad.data.protocols import disjoint_splits, fold_test_patients, read_fold_list
from lungsrad.data.protocols import natural_key as _natural_key
from lungsrad.errors import UserError


def _patients_in(feature_set: FeatureSet, split: str) -> set[str]:
    pairs = zip(feature_set.patient_ids, feature_set.official_split, strict=True)
    return {patient for patient, official in pairs if official == split}


def official_patient_overlap(feature_set: FeatureSet) -> list[str]:
    """Patients with cycles in both the official train and test split (ICBHI: 156 and 218)."""
    overlap = _patients_in(feature_set, "train") & _patients_in(feature_set, "test")
    return sorted(overlap, key=_natural_key)


def validation_patients(
    feature_set: FeatureSet, *, validation_fraction: float, seed: int
) -> list[str]:
    """The official-train patients held out for validation (seeded; sorted).

    round(validation_fraction * number of train patients) patients, at least one, leaving at
    least one for training. Patients that also appear in the official test split are never
    picked, so validation never shares a patient with test.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise UserError(f"data.validation_fraction must be in (0, 1), got {validation_fraction}")
    overlap = set(official_patient_overlap(feature_set))
    train_patients = sorted(_patients_in(feature_set, "train"), key=_natural_key)
    candidates = [p for p in train_patients if p not in overlap]
    if len(train_patients) < 2 or not candidates:
        raise UserError(
            f"the 'validated' protocol needs at least 2 official-train patients (one of them not "
            f"in test), found {len(train_patients)}; use train.protocol: paper or more data"
        )
    return _draw_patients(candidates, len(train_patients), validation_fraction, seed)


def _draw_patients(
    candidates: list[str], num_patients: int, validation_fraction: float, seed: int
) -> list[str]:
    """round(fraction * num_patients) of `candidates` (at least one, leaving one), seeded."""
    count = int(round(validation_fraction * num_patients))
    count = min(max(count, 1), num_patients - 1, len(candidates))
    order = np.random.default_rng(seed).permutation(len(candidates))
    return sorted((candidates[i] for i in order[:count]), key=_natural_key)


def _carve_validation(
    feature_set: FeatureSet,
    train: np.ndarray,
    test: np.ndarray,
    *,
    protocol: str,
    validation_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """{"train", "val", "test"}: a seeded share of the training patients held out for epoch
    selection (patient-disjoint from train and test)."""
    patient_ids = np.asarray(feature_set.patient_ids)
    train_patients = sorted(set(patient_ids[train].tolist()), key=_natural_key)
    if len(train_patients) < 2:
        raise UserError(
            f"train.protocol '{protocol}' needs at least 2 training patients to hold one out "
            f"for validation, found {len(train_patients)}; use more data"
        )
    held_out = _draw_patients(train_patients, len(train_patients), validation_fraction, seed)
    is_held_out = np.isin(patient_ids[train], held_out)
    return {"train": train[~is_held_out], "val": train[is_held_out], "test": test}


def split_indices(
    feature_set: FeatureSet,
    *,
    protocol: str,
    validation_fraction: float,
    seed: int,
    fold: int | None = None,
) -> dict[str, np.ndarray]:
    """Cycle indices of each split.

    Args:
        feature_set: all cycles, with patient ids and official split.
        protocol: "paper" -> {"train", "test"} (official split); "validated" -> {"train", "val",
            "test"} where "val" holds every cycle of a seeded set of official-train patients;
            "foldwise" -> test = the patients of RespireNet's fold `fold`, train and val from the
            other four folds; "disjoint" -> the official split with each patient on both sides
            moved wholly to the side holding most of its cycles, then a val carve-out.
        validation_fraction: share of training patients held out (all but "paper").
        seed: seed of the patient draw (all but "paper").
        fold: the test fold, 0..4 ("foldwise" only).

    Returns:
        split name -> sorted int64 indices (num_split_cycles,) into the feature set.

    Raises:
        UserError: patients missing from the fold list, a fold without test cycles, an empty
            split (one line naming the patients or the key).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "foldwise":
        return _foldwise_splits(
            feature_set, fold=fold, validation_fraction=validation_fraction, seed=seed
        )
    official = np.asarray(
        disjoint_splits(feature_set.patient_ids, feature_set.official_split)
        if protocol == "disjoint"
        else feature_set.official_split
    )
    train = np.flatnonzero(official == "train").astype(np.int64)
    test = np.flatnonzero(official == "test").astype(np.int64)
    if train.size == 0 or test.size == 0:
        raise UserError(
            f"the feature set has {train.size} train and {test.size} test cycles; both "
            "official splits must be non-empty (check the split file)"
        )
    if protocol == "paper":
        return {"train": train, "test": test}
    if protocol == "disjoint":
        return _carve_validation(
            feature_set,
            train,
            test,
            protocol=protocol,
            validation_fraction=validation_fraction,
            seed=seed,
        )
    held_out = validation_patients(feature_set, validation_fraction=validation_fraction, seed=seed)
    is_held_out = np.isin(np.asarray(feature_set.patient_ids)[train], held_out)
    return {"train": train[~is_held_out], "val": train[is_held_out], "test": test}


def _foldwise_splits(
    feature_set: FeatureSet, *, fold: int | None, validation_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    if fold is None:
        raise UserError("train.protocol 'foldwise' needs data.fold: the test fold, 0..4")
    patient_ids = np.asarray(feature_set.patient_ids)
    test_patients = fold_test_patients(set(feature_set.patient_ids), read_fold_list(), fold)
    is_test = np.isin(patient_ids, test_patients)
    test = np.flatnonzero(is_test).astype(np.int64)
    train = np.flatnonzero(~is_test).astype(np.int64)
    if train.size == 0:
        raise UserError(
            f"data.fold {fold}: every patient of the dataset is in this fold, none is left to "
            "train on; use the whole ICBHI database"
        )
    return _carve_validation(
        feature_set,
        train,
        test,
        protocol="foldwise",
        validation_fraction=validation_fraction,
        seed=seed,
    )
