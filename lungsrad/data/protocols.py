"""Patient-level rules of the evaluation protocols: RespireNet's 5-fold patient list ('foldwise',
as patch-mix CL's `--test_fold 0..4`) and the patient-disjoint variant of the official split
('disjoint'). Torch-free, so `lungsrad data inspect` uses it without paying torch's import time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from lungsrad.config import NUM_FOLDS
from lungsrad.errors import UserError

FOLD_LIST_FILE = "patient_list_foldwise.txt"  # package data of lungsrad.data
FOLD_LIST_SOURCE = (
    "RespireNet (microsoft/RespireNet data/patient_list_foldwise.txt), as shipped by "
    "raymin0223/patch-mix_contrastive_learning data/icbhi_dataset/patient_list_foldwise.txt (MIT)"
)


def natural_key(patient_id: str) -> tuple[int, str]:
    """Sort key putting numeric patient ids in numeric order (9 before 10)."""
    return (int(patient_id), patient_id) if patient_id.isdigit() else (1 << 62, patient_id)


def parse_fold_list(text: str, *, source: str) -> dict[str, int]:
    """patient id -> fold from `PATIENT FOLD` lines (blank lines ignored).

    Raises:
        UserError: a malformed line, a fold outside 0..NUM_FOLDS-1 or a patient listed twice
            (`source` and the line named).
    """
    folds: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) >= NUM_FOLDS:
            raise UserError(
                f"{source}:{number}: expected 'PATIENT FOLD' with FOLD in 0..{NUM_FOLDS - 1}, "
                f"got {line.strip()!r}"
            )
        patient, fold = fields[0], int(fields[1])
        if patient in folds:
            raise UserError(f"{source}:{number}: patient {patient} is listed twice")
        folds[patient] = fold
    return folds


def read_fold_list() -> dict[str, int]:
    """RespireNet's patient -> fold map shipped with lungsrad (126 ICBHI patients, folds 0-4)."""
    resource = resources.files("lungsrad.data").joinpath(FOLD_LIST_FILE)
    return parse_fold_list(resource.read_text(encoding="utf-8"), source=FOLD_LIST_FILE)


def _patient_list(patients: Iterable[str], limit: int = 12) -> str:
    ordered = sorted(set(patients), key=natural_key)
    more = f" and {len(ordered) - limit} more" if len(ordered) > limit else ""
    return ", ".join(ordered[:limit]) + more


def check_fold_coverage(patients: Iterable[str], folds: Mapping[str, int]) -> None:
    """UserError naming the dataset's patients that the fold list does not hold."""
    missing = sorted({p for p in patients if p not in folds}, key=natural_key)
    if missing:
        raise UserError(
            f"train.protocol 'foldwise': {len(missing)} patient(s) of the dataset are not in "
            f"RespireNet's fold list ({FOLD_LIST_FILE}, {len(folds)} ICBHI patients): "
            f"{_patient_list(missing)}; use the ICBHI patients, or train.protocol 'validated' "
            "or 'disjoint'"
        )


def fold_test_patients(patients: Iterable[str], folds: Mapping[str, int], fold: int) -> list[str]:
    """The dataset's patients in test fold `fold` (sorted).

    Raises:
        UserError: a patient missing from `folds`, or no dataset patient in `fold` (the fold
            would have no test cycles).
    """
    present = set(patients)
    check_fold_coverage(present, folds)
    test = sorted((p for p in present if folds[p] == fold), key=natural_key)
    if not test:
        listed = [p for p, f in folds.items() if f == fold]
        raise UserError(
            f"data.fold {fold} has no test cycles: none of its {len(listed)} patients "
            f"({_patient_list(listed)}) is in the dataset; choose another fold or add the data"
        )
    return test


@dataclass(frozen=True)
class MovedPatient:
    """A patient the official split puts on both sides, and where 'disjoint' puts it."""

    patient: str
    cycles: dict[str, int]  # official split -> the patient's cycles there
    side: str  # "train" | "test": the side it moves to wholly

    def to_dict(self) -> dict[str, object]:
        return {"patient": self.patient, "cycles": dict(self.cycles), "to": self.side}


def disjoint_moves(patients: Sequence[str], splits: Sequence[str]) -> list[MovedPatient]:
    """The patients with cycles in both official splits, each moved wholly to the side that holds
    most of its cycles (a tie goes to test, so the test set never shrinks on a tie).

    Args:
        patients: patient id per cycle.
        splits: official split ("train" | "test") per cycle, aligned with `patients`.

    Returns:
        The moved patients, in patient order.
    """
    counts: dict[str, Counter[str]] = {}
    for patient, split in zip(patients, splits, strict=True):
        counts.setdefault(patient, Counter())[split] += 1
    moved = []
    for patient in sorted(counts, key=natural_key):
        train, test = counts[patient]["train"], counts[patient]["test"]
        if train and test:
            side = "train" if train > test else "test"
            moved.append(MovedPatient(patient, {"train": train, "test": test}, side))
    return moved


def disjoint_splits(patients: Sequence[str], splits: Sequence[str]) -> list[str]:
    """The official split per cycle with every shared patient moved wholly to one side
    (`disjoint_moves`), so no patient is on both sides."""
    side = {move.patient: move.side for move in disjoint_moves(patients, splits)}
    return [side.get(p, s) for p, s in zip(patients, splits, strict=True)]
