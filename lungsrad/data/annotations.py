"""ICBHI 2017 annotation and split files and the records they describe: `Cycle` (one labelled
respiratory cycle), `Recording`, `DataProblem`, and whether a cycle fits its recording.

Follows the ICBHI_final_database layout (Rocha et al., 2019): NAME.txt holds one cycle per line
(start, end, crackle, wheeze), ICBHI_challenge_train_test.txt one `NAME<tab>train|test` per line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lungsrad.data.layout import SPLITS
from lungsrad.errors import UserError

# Annotated cycle ends can lie a few milliseconds after the end of the wav file (rounding of the
# annotation times). Ends up to this far past the file end are clipped to it; larger overshoots
# suggest the annotation does not belong to this audio and are reported as problems.
END_TOLERANCE_SECONDS = 0.05


@dataclass(frozen=True)
class Cycle:
    """One annotated respiratory cycle."""

    recording: str  # recording name (file stem)
    index: int  # 0-based position among the recording's cycles
    start_seconds: float
    end_seconds: float
    crackle: bool
    wheeze: bool
    line: int = 0  # 1-based line in the annotation file (0: unknown)

    @property
    def label(self) -> int:
        """0 normal, 1 crackle, 2 wheeze, 3 both (lungsrad.metrics.CLASS_NAMES)."""
        return int(self.crackle) + 2 * int(self.wheeze)

    @property
    def duration_seconds(self) -> float:
        return self.end_seconds - self.start_seconds


@dataclass(frozen=True)
class Recording:
    """One recording: its files, patient, official split and annotated cycles."""

    name: str
    patient_id: str
    wav_path: Path
    annotation_path: Path
    split: str  # "train" | "test"
    cycles: tuple[Cycle, ...]
    sample_rate_hz: int | None = None  # from the wav header; None when headers were not read
    num_frames: int | None = None  # samples per channel, from the wav header

    @property
    def duration_seconds(self) -> float | None:
        if self.sample_rate_hz is None or self.num_frames is None:
            return None
        return self.num_frames / self.sample_rate_hz


@dataclass(frozen=True)
class DataProblem:
    """Something wrong with the data, named by file and (when it applies) line."""

    path: str
    line: int | None
    message: str
    is_missing_file: bool = False  # strict loading raises FileNotFoundError for these

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """{"file": path, "line": line or None, "message": text} for JSON reports."""
        return {"file": self.path, "line": self.line, "message": self.message}


def _read_lines(path: Path) -> list[str]:
    # utf-8-sig drops a byte-order mark; splitlines() accepts LF, CRLF and CR alike.
    return path.read_text(encoding="utf-8-sig", errors="replace").splitlines()


def parse_split_file(path: Path) -> tuple[dict[str, tuple[str, int]], list[DataProblem]]:
    """Parses the official split file: name -> (split, line), plus the malformed lines."""
    entries: dict[str, tuple[str, int]] = {}
    problems: list[DataProblem] = []
    for number, text in enumerate(_read_lines(path), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1].lower() not in SPLITS:
            problems.append(
                DataProblem(
                    str(path), number, f"expected 'NAME<TAB>train|test', got {text.strip()!r}"
                )
            )
            continue
        name, split = fields[0], fields[1].lower()
        if name in entries and entries[name][0] != split:
            problems.append(
                DataProblem(
                    str(path),
                    number,
                    f"{name} is listed as {split} here and as {entries[name][0]} on line "
                    f"{entries[name][1]}",
                )
            )
            continue
        entries.setdefault(name, (split, number))
    return entries, problems


def read_split_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Reads the official split file (`NAME<TAB>train|test`, LF or CRLF) into name -> split.

    Raises:
        FileNotFoundError: the file does not exist.
        UserError: a malformed or contradictory line (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    entries, problems = parse_split_file(path)
    if problems:
        raise UserError(f"{problems[0]}; fix the split file")
    return {name: split for name, (split, _) in entries.items()}


def _parse_annotation_fields(text: str) -> tuple[float, float, bool, bool] | str:
    """(start, end, crackle, wheeze) from one annotation line, or why the line is wrong."""
    fields = text.split()
    if len(fields) != 4:
        return f"expected 4 fields 'start end crackle wheeze', got {len(fields)}: {text.strip()!r}"
    try:
        start, end = float(fields[0]), float(fields[1])
    except ValueError:
        return f"start and end must be numbers (seconds), got {text.strip()!r}"
    if fields[2] not in ("0", "1") or fields[3] not in ("0", "1"):
        return f"crackle and wheeze must be 0 or 1, got {text.strip()!r}"
    if not (math.isfinite(start) and math.isfinite(end)):
        return f"start and end must be finite, got {text.strip()!r}"
    if start < 0:
        return f"cycle starts before the recording ({start:g} s)"
    if end == start:
        return f"zero-length cycle (start = end = {start:g} s)"
    if end < start:
        return f"reversed cycle: end {end:g} s is before start {start:g} s"
    return start, end, fields[2] == "1", fields[3] == "1"


def parse_annotation_file(path: Path, recording: str) -> tuple[list[Cycle], list[DataProblem]]:
    """Parses `start end crackle wheeze` lines (tabs or spaces); bad lines become problems."""
    cycles: list[Cycle] = []
    problems: list[DataProblem] = []
    for number, text in enumerate(_read_lines(path), start=1):
        if not text.strip():
            continue
        parsed = _parse_annotation_fields(text)
        if isinstance(parsed, str):
            problems.append(DataProblem(str(path), number, parsed))
            continue
        start, end, crackle, wheeze = parsed
        cycles.append(
            Cycle(
                recording=recording,
                index=len(cycles),
                start_seconds=start,
                end_seconds=end,
                crackle=crackle,
                wheeze=wheeze,
                line=number,
            )
        )
    if not cycles and not problems:
        problems.append(DataProblem(str(path), None, "annotation file holds no cycles"))
    return cycles, problems


def cycle_position_problem(cycle: Cycle, duration_seconds: float) -> str | None:
    """Why a cycle does not fit a recording of `duration_seconds`, or None when it fits."""
    if cycle.start_seconds >= duration_seconds:
        return (
            f"cycle starts at {cycle.start_seconds:g} s, at or after the recording end "
            f"({duration_seconds:.3f} s)"
        )
    overshoot = cycle.end_seconds - duration_seconds
    if overshoot > END_TOLERANCE_SECONDS:
        return (
            f"cycle ends at {cycle.end_seconds:g} s, {overshoot:.3f} s past the recording end "
            f"({duration_seconds:.3f} s; tolerance {END_TOLERANCE_SECONDS} s)"
        )
    return None


def patient_id_of(name: str) -> str:
    """Patient id = first `_` field of the recording name (101_1b1_Al_sc_Meditron -> 101)."""
    return name.split("_", 1)[0]
