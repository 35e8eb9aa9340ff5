"""`lungsrad data inspect`: validate an ICBHI-layout folder and summarise it, listing every problem
with its file and line instead of stopping at the first (the strict loaders stop at the first).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lungsrad.config import NUM_FOLDS
from lungsrad.data.annotations import DataProblem, Recording
from lungsrad.data.icbhi import UNASSIGNED, scan_dataset
from lungsrad.data.layout import SPLITS, device_of
from lungsrad.data.protocols import (
    FOLD_LIST_FILE,
    MovedPatient,
    disjoint_moves,
    natural_key,
    read_fold_list,
)
from lungsrad.metrics import CLASS_NAMES

MAX_PROBLEMS_IN_TEXT = 50


def _seconds_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "min": 0.0, "max": 0.0, "mean": 0.0, "total": 0.0}
    return {
        "count": len(values),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "mean": round(sum(values) / len(values), 3),
        "total": round(sum(values), 3),
    }


@dataclass
class InspectReport:
    """Summary and problems of a dataset folder (see `inspect_dataset`)."""

    root: str
    split_file: str
    recordings: dict[str, int]  # split -> recordings
    patients: dict[str, int]  # split -> patients
    num_patients: int
    splits: dict[str, dict[str, int]]  # split -> class name -> cycles
    sample_rates_hz: dict[int, int]  # rate -> recordings
    subtypes: dict[str, int]  # PCM_16 / PCM_24 / FLOAT ... -> recordings
    recording_seconds: dict[str, float]  # count / min / max / mean / total
    cycle_seconds: dict[str, float]  # count / min / max / mean / total
    # split -> recording device -> class name -> cycles (devices without cycles absent)
    devices: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    # RespireNet fold "0".."4" -> class name -> cycles of the dataset's patients in that fold
    folds: dict[str, dict[str, int]] = field(default_factory=dict)
    unlisted_patients: list[str] = field(default_factory=list)  # not in the fold list
    disjoint_moves: list[MovedPatient] = field(default_factory=list)  # protocol 'disjoint'
    problems: list[DataProblem] = field(default_factory=list)  # make the data unusable
    warnings: list[DataProblem] = field(default_factory=list)  # worth knowing, still usable
    notes: list[str] = field(default_factory=list)

    @property
    def num_cycles(self) -> int:
        return sum(sum(counts.values()) for counts in self.splits.values())

    @property
    def num_recordings(self) -> int:
        return sum(self.recordings.values())

    @property
    def is_usable(self) -> bool:
        """True when the strict loaders would accept the data (no problems, some cycles)."""
        return not self.problems and self.num_cycles > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"splits": {"train": {"normal": n, ...}, "test": {...}}, "problems": [...],
        ...}; each problem is {"file", "line", "message"}."""
        return {
            "root": self.root,
            "split_file": self.split_file,
            "usable": self.is_usable,
            "num_recordings": self.num_recordings,
            "num_patients": self.num_patients,
            "num_cycles": self.num_cycles,
            "recordings": self.recordings,
            "patients": self.patients,
            "cycles": {split: sum(counts.values()) for split, counts in self.splits.items()},
            "splits": self.splits,
            "sample_rates_hz": {str(rate): n for rate, n in self.sample_rates_hz.items()},
            "subtypes": self.subtypes,
            "recording_seconds": self.recording_seconds,
            "cycle_seconds": self.cycle_seconds,
            "devices": self.devices,
            "folds": self.folds,
            "patients_not_in_fold_list": list(self.unlisted_patients),
            "disjoint_moves": [move.to_dict() for move in self.disjoint_moves],
            "problems": [problem.to_dict() for problem in self.problems],
            "warnings": [warning.to_dict() for warning in self.warnings],
            "notes": list(self.notes),
        }

    def _protocol_lines(self) -> list[str]:
        """The device table, the fold table and the 'disjoint' moves."""
        header = "".join(f"{name:>9}" for name in CLASS_NAMES) + f"{'total':>8}"

        def row(label: str, counts: dict[str, int]) -> str:
            cells = "".join(f"{counts[name]:>9}" for name in CLASS_NAMES)
            return f"  {label:<20}{cells}{sum(counts.values()):>8}"

        lines = [f"  {'split / device':<20}{header}"]
        for split, devices in self.devices.items():
            lines += [row(f"{split} {device}", counts) for device, counts in devices.items()]
        lines.append(f"  {'RespireNet fold':<20}{header}")
        lines += [row(f"fold {fold}", counts) for fold, counts in self.folds.items()]
        if self.unlisted_patients:
            lines.append(
                f"  {len(self.unlisted_patients)} patient(s) not in the fold list "
                f"({FOLD_LIST_FILE}): {', '.join(self.unlisted_patients[:10])}; "
                "train.protocol foldwise refuses this dataset"
            )
        for move in self.disjoint_moves:
            lines.append(
                f"  disjoint: patient {move.patient} ({move.cycles['train']} train, "
                f"{move.cycles['test']} test cycles) moves wholly to {move.side}"
            )
        return lines

    def format_text(self) -> str:
        lines = [
            f"dataset {self.root}",
            f"  split file: {self.split_file}",
            f"  recordings: {self.num_recordings}  patients: {self.num_patients}  "
            f"cycles: {self.num_cycles}",
            f"  {'split':<11}{'patients':>9}{'recordings':>11}"
            + "".join(f"{name:>9}" for name in CLASS_NAMES)
            + f"{'total':>8}",
        ]
        for split, counts in self.splits.items():
            lines.append(
                f"  {split:<11}{self.patients.get(split, 0):>9}{self.recordings.get(split, 0):>11}"
                + "".join(f"{counts[name]:>9}" for name in CLASS_NAMES)
                + f"{sum(counts.values()):>8}"
            )
        rates = ", ".join(f"{rate} Hz x{n}" for rate, n in self.sample_rates_hz.items()) or "-"
        subtypes = ", ".join(f"{name} x{n}" for name, n in self.subtypes.items()) or "-"
        lines.append(f"  sample rates: {rates}")
        lines.append(f"  sample formats: {subtypes}")
        for label, summary in (
            ("recording", self.recording_seconds),
            ("cycle", self.cycle_seconds),
        ):
            if summary["count"]:
                lines.append(
                    f"  {label} seconds: min {summary['min']:.2f}, mean {summary['mean']:.2f}, "
                    f"max {summary['max']:.2f}, total {summary['total']:.1f}"
                )
        lines.extend(self._protocol_lines())
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.extend(f"  warning: {warning}" for warning in self.warnings)
        if self.problems:
            lines.append(f"  {len(self.problems)} problem(s):")
            lines.extend(f"    {problem}" for problem in self.problems[:MAX_PROBLEMS_IN_TEXT])
            hidden = len(self.problems) - MAX_PROBLEMS_IN_TEXT
            if hidden > 0:
                lines.append(f"    ... and {hidden} more (use --json for the full list)")
        lines.append(
            "  usable: yes"
            if self.is_usable
            else "  usable: NO (fix the problems above)"
            if self.problems
            else "  usable: NO (no cycles)"
        )
        return "\n".join(lines)


def inspect_dataset(
    root: str | os.PathLike[str],
    split_file: str | os.PathLike[str] | None = None,
    *,
    decode_audio: bool = True,
) -> InspectReport:
    """Validates a dataset folder and summarises it; data problems are collected, never raised.

    Checks the split file (format, entries without files, recordings it misses, the known
    226_1b1 naming error), every annotation line, every wav (readable, mono, non-empty and, with
    `decode_audio`, free of NaN/inf samples) and every cycle against its recording's length.

    Args:
        root: ICBHI_final_database-style folder.
        split_file: official split file; None: <root>/ICBHI_challenge_train_test.txt.
        decode_audio: decode every wav to look for NaN/inf samples.

    Raises:
        FileNotFoundError / NotADirectoryError: `root` is missing or not a folder.
        UserError: `root` holds no recordings at all (nothing to inspect).
    """
    scan = scan_dataset(root, split_file, read_headers=True, decode_audio=decode_audio)
    split_names = list(SPLITS)
    if any(recording.split == UNASSIGNED for recording in scan.recordings):
        split_names.append(UNASSIGNED)
    splits = {split: dict.fromkeys(CLASS_NAMES, 0) for split in split_names}
    recordings = dict.fromkeys(split_names, 0)
    patients: dict[str, set[str]] = {split: set() for split in split_names}
    cycle_seconds = []
    for recording in scan.recordings:
        recordings[recording.split] += 1
        patients[recording.split].add(recording.patient_id)
        for cycle in recording.cycles:
            splits[recording.split][CLASS_NAMES[cycle.label]] += 1
            cycle_seconds.append(cycle.duration_seconds)
    audio = scan.audio.values()
    folds, unlisted = _fold_counts(scan.recordings)
    return InspectReport(
        root=str(scan.root),
        split_file=str(scan.split_file),
        recordings=recordings,
        patients={split: len(members) for split, members in patients.items()},
        num_patients=len({recording.patient_id for recording in scan.recordings}),
        splits=splits,
        sample_rates_hz=dict(sorted(Counter(info.sample_rate_hz for info in audio).items())),
        subtypes=dict(sorted(Counter(info.subtype for info in audio).items())),
        recording_seconds=_seconds_summary([info.duration_seconds for info in audio]),
        cycle_seconds=_seconds_summary(cycle_seconds),
        devices=_device_counts(scan.recordings, split_names),
        folds=folds,
        unlisted_patients=unlisted,
        disjoint_moves=disjoint_moves(
            [r.patient_id for r in scan.recordings for _ in r.cycles],
            [r.split for r in scan.recordings for _ in r.cycles],
        ),
        problems=scan.problems,
        warnings=scan.warnings,
        notes=scan.notes,
    )


def _device_counts(
    recordings: list[Recording], split_names: list[str]
) -> dict[str, dict[str, dict[str, int]]]:
    """split -> device -> class name -> cycles; a device without cycles in a split is absent."""
    counts: dict[str, dict[str, dict[str, int]]] = {split: {} for split in split_names}
    for recording in recordings:
        if not recording.cycles:
            continue
        device = counts[recording.split].setdefault(
            device_of(recording.name), dict.fromkeys(CLASS_NAMES, 0)
        )
        for cycle in recording.cycles:
            device[CLASS_NAMES[cycle.label]] += 1
    return {split: dict(sorted(devices.items())) for split, devices in counts.items()}


def _fold_counts(recordings: list[Recording]) -> tuple[dict[str, dict[str, int]], list[str]]:
    """RespireNet fold ("0".."4") -> class name -> cycles, and the patients the list lacks."""
    fold_of = read_fold_list()
    folds = {str(fold): dict.fromkeys(CLASS_NAMES, 0) for fold in range(NUM_FOLDS)}
    unlisted = set()
    for recording in recordings:
        if recording.patient_id not in fold_of:
            unlisted.add(recording.patient_id)
            continue
        for cycle in recording.cycles:
            folds[str(fold_of[recording.patient_id])][CLASS_NAMES[cycle.label]] += 1
    return folds, sorted(unlisted, key=natural_key)
