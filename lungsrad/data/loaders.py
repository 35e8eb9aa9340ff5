"""Evaluation splits over a FeatureSet: the official ICBHI train/test split ('paper' protocol) and
a seeded, patient-disjoint validation carve-out of the official train split ('validated').
"""

from __future__ import annotations

import numpy as np

from lungsrad.data.features import FeatureSet
from lungsrad.errors import UserError

PROTOCOLS: tuple[str, ...] = ("paper", "validated")


def _natural_key(patient_id: str) -> tuple[int, str]:
    return (int(patient_id), patient_id) if patient_id.isdigit() else (1 << 62, patient_id)


def _patients_in(feature_set: FeatureSet, split: str) -> set[str]:
    pairs = zip(feature_set.patient_ids, feature_set.official_split, strict=True)
    return {patient for patient, official in pairs if official == split}


def official_patient_overlap(feature_set: FeatureSet) -> list[str]:
    """Patients with cycles in both the official train and test split (ICBHI: expected none)."""
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
    count = int(round(validation_fraction * len(train_patients)))
    count = min(max(count, 1), len(train_patients) - 1, len(candidates))
    order = np.random.default_rng(seed).permutation(len(candidates))
    return sorted((candidates[i] for i in order[:count]), key=_natural_key)


def split_indices(
    feature_set: FeatureSet, *, protocol: str, validation_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Cycle indices of each split.

    Args:
        feature_set: all cycles, with patient ids and official split.
        protocol: "paper" -> {"train", "test"} (official split); "validated" -> {"train", "val",
            "test"} where "val" holds every cycle of a seeded set of official-train patients.
        validation_fraction: share of official-train patients held out ("validated" only).
        seed: seed of the patient draw ("validated" only).

    Returns:
        split name -> sorted int64 indices (num_split_cycles,) into the feature set.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    official = np.asarray(feature_set.official_split)
    train = np.flatnonzero(official == "train").astype(np.int64)
    test = np.flatnonzero(official == "test").astype(np.int64)
    if train.size == 0 or test.size == 0:
        raise UserError(
            f"the feature set has {train.size} train and {test.size} test cycles; both "
            "official splits must be non-empty (check the split file)"
        )
    if protocol == "paper":
        return {"train": train, "test": test}
    held_out = validation_patients(feature_set, validation_fraction=validation_fraction, seed=seed)
    is_held_out = np.isin(np.asarray(feature_set.patient_ids)[train], held_out)
    return {"train": train[~is_held_out], "val": train[is_held_out], "test": test}
