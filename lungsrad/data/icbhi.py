"""ICBHI 2017 database reader: recordings, cycle labels, the official split and cycle waveforms.

Follows the ICBHI_final_database layout (Rocha et al., 2019) and the cycle slicing and padding of
the patch-mix / DASS reference code (`util/icbhi_util.py`: resample the recording, slice, pad).
torch is imported inside the waveform functions only, so `lungsrad data inspect` starts fast.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile

from lungsrad.config import DataConfig
from lungsrad.data.layout import (
    DIAGNOSIS_FILE_NAME,
    RECORDING_NAME_PATTERN,
    SPLIT_FILE_NAME,
    SPLIT_NAME_FIXES,
    SPLITS,
    archive_hint,
)
from lungsrad.errors import UserError

if TYPE_CHECKING:
    import torch

UNASSIGNED = "unassigned"  # only inside a DatasetScan: a recording the split file does not list

# Annotated cycle ends can lie a few milliseconds after the end of the wav file (rounding of the
# annotation times). Ends up to this far past the file end are clipped to it; larger overshoots
# suggest the annotation does not belong to this audio and are reported as problems.
END_TOLERANCE_SECONDS = 0.05

_decode_count = 0


def audio_decode_count() -> int:
    """How many times audio samples were decoded in this process (headers not counted)."""
    return _decode_count


# ---------------------------------------------------------------------------------------------
# Records


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


@dataclass(frozen=True)
class AudioInfo:
    """What the wav header says."""

    sample_rate_hz: int
    num_frames: int
    channels: int
    subtype: str

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.sample_rate_hz


@dataclass
class DatasetScan:
    """Everything found in a dataset folder, valid or not (see `scan_dataset`)."""

    root: Path
    split_file: Path
    recordings: list[Recording]  # sorted by name; split may be UNASSIGNED
    problems: list[DataProblem]  # errors: strict loading refuses the data
    warnings: list[DataProblem]  # usable, but worth knowing
    notes: list[str]  # informational (fixes applied, cycles clipped)
    audio: dict[str, AudioInfo] = field(default_factory=dict)  # name -> header, when read
    num_cycles_clipped: int = 0  # cycles ending within END_TOLERANCE_SECONDS past the file

    def raise_first_problem(self) -> None:
        """Raises the first problem as a one-line ValueError / FileNotFoundError (if any)."""
        if not self.problems:
            return
        first = self.problems[0]
        more = len(self.problems) - 1
        others = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        message = (
            f"{first}{others}; fix it, or run `lungsrad data inspect {self.root}` for the full list"
        )
        if first.is_missing_file:
            raise FileNotFoundError(message)
        raise UserError(message)


# ---------------------------------------------------------------------------------------------
# Text files


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
        ValueError: a malformed or contradictory line (file and line named).
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


# ---------------------------------------------------------------------------------------------
# Audio


def read_audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Reads a wav header (no samples decoded).

    Raises:
        ValueError: the file is not readable audio.
    """
    try:
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise UserError(f"{path}: unreadable wav ({error})") from None
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels), info.subtype)


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decodes a mono wav (PCM 16/24/32-bit or float) to float32 in [-1, 1].

    Returns:
        (samples (num_frames,) float32, sample rate in Hz).

    Raises:
        ValueError: unreadable, not mono, empty, or holding NaN/inf samples.
    """
    global _decode_count
    _decode_count += 1
    try:
        samples, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise UserError(f"{path}: unreadable wav ({error})") from None
    check_audio_samples(path, samples)
    return np.ascontiguousarray(samples[:, 0]), int(sample_rate)


_EMPTY_MESSAGE = "the wav file holds no samples"


def _channels_message(channels: int) -> str:
    return (
        f"has {channels} channels but ICBHI recordings are mono; mix it down to one channel "
        "(e.g. `sox in.wav out.wav remix -`)"
    )


def check_audio_samples(path: str | os.PathLike[str], samples: np.ndarray) -> None:
    """ValueError naming `path` unless samples (frames, channels) are mono, finite, non-empty."""
    if samples.shape[1] != 1:
        raise UserError(f"{path}: {_channels_message(samples.shape[1])}")
    if samples.shape[0] == 0:
        raise UserError(f"{path}: {_EMPTY_MESSAGE}")
    finite = np.isfinite(samples[:, 0])
    if not finite.all():
        first = int(np.argmin(finite))
        raise UserError(
            f"{path}: holds NaN or infinite samples (first at sample {first}); "
            "re-export the recording"
        )


def resample(waveform: torch.Tensor, source_rate_hz: int, target_rate_hz: int) -> torch.Tensor:
    """Band-limited resampling of a whole recording: (samples,) -> (samples * target / source,)."""
    import torchaudio

    if source_rate_hz == target_rate_hz:
        return waveform
    return torchaudio.functional.resample(waveform, source_rate_hz, target_rate_hz)


def fit_to_length(waveform: torch.Tensor, num_samples: int, padding: str) -> torch.Tensor:
    """Cuts or pads a cycle to exactly `num_samples`.

    Args:
        waveform: (samples,), at least one sample.
        num_samples: target length.
        padding: "repeat" tiles the cycle (reference default), "zero" appends zeros.

    Returns:
        (num_samples,)
    """
    import torch

    length = waveform.shape[-1]
    if length == 0:
        raise ValueError("cannot pad an empty cycle")
    if length >= num_samples:
        return waveform[:num_samples]
    if padding == "repeat":
        return waveform.repeat(math.ceil(num_samples / length))[:num_samples]
    if padding == "zero":
        return torch.nn.functional.pad(waveform, (0, num_samples - length))
    raise ValueError(f"data.padding must be 'repeat' or 'zero', got {padding!r}")


def _sample_index(seconds: float, rate_hz: int) -> int:
    # Truncation as in the reference slicing; the epsilon keeps 0.3 s * 16 kHz at 4800, not 4799.
    return int(math.floor(seconds * rate_hz + 1e-6))


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


def slice_cycles(
    waveform: torch.Tensor,
    recording: Recording,
    *,
    source_duration_seconds: float,
    data_config: DataConfig,
) -> list[torch.Tensor]:
    """Slices every cycle of `recording` out of its resampled waveform and fits it to length.

    Args:
        waveform: (samples,) the whole recording at data_config.sample_rate_hz.
        source_duration_seconds: duration of the original file (for the end tolerance).

    Returns:
        One (segment_seconds * sample_rate_hz,) tensor per cycle.
    """
    rate = data_config.sample_rate_hz
    num_samples = int(round(data_config.segment_seconds * rate))
    segments = []
    for cycle in recording.cycles:
        problem = cycle_position_problem(cycle, source_duration_seconds)
        if problem is not None:
            raise UserError(f"{recording.annotation_path}:{cycle.line}: {problem}")
        start = _sample_index(cycle.start_seconds, rate)
        end = min(_sample_index(cycle.end_seconds, rate), waveform.shape[-1])
        if end <= start:
            raise UserError(
                f"{recording.annotation_path}:{cycle.line}: cycle is shorter than one sample at "
                f"{rate} Hz"
            )
        segments.append(fit_to_length(waveform[start:end], num_samples, data_config.padding))
    return segments


def load_cycle_waveforms(recording: Recording, data_config: DataConfig) -> list[torch.Tensor]:
    """Decodes a recording once, resamples it once, and returns its cycles.

    Returns:
        One float32 tensor (segment_seconds * sample_rate_hz,) per cycle (8 s at 16 kHz:
        (128000,)), in annotation order.

    Raises:
        ValueError: unreadable/stereo/NaN audio, or a cycle outside the recording.
    """
    import torch

    samples, source_rate = read_wav(recording.wav_path)
    waveform = resample(torch.from_numpy(samples), source_rate, data_config.sample_rate_hz)
    return slice_cycles(
        waveform,
        recording,
        source_duration_seconds=samples.shape[0] / source_rate,
        data_config=data_config,
    )


# ---------------------------------------------------------------------------------------------
# Folder scan


def patient_id_of(name: str) -> str:
    """Patient id = first `_` field of the recording name (101_1b1_Al_sc_Meditron -> 101)."""
    return name.split("_", 1)[0]


def _nested_database_hint(root: Path) -> str:
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.is_dir() and any(child.glob("*.wav")):
            return f"; did you mean {child}?"
    return ""


def scan_dataset(
    root: str | os.PathLike[str],
    split_file: str | os.PathLike[str] | None = None,
    *,
    read_headers: bool = True,
    decode_audio: bool = False,
) -> DatasetScan:
    """Finds every recording in `root` and every problem with it, without raising on data.

    Args:
        root: ICBHI_final_database-style folder (NAME.wav + NAME.txt per recording).
        split_file: official split file; None: <root>/ICBHI_challenge_train_test.txt.
        read_headers: read wav headers (sample rate, length, channels) and check cycle times.
        decode_audio: also decode the samples (finds NaN/inf samples; slow on big data).

    Raises:
        FileNotFoundError / NotADirectoryError: `root` does not exist or is not a folder.
        ValueError: `root` holds no recordings at all.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset path is not a folder: {root}{archive_hint(root)}")
    split_path = Path(split_file) if split_file is not None else root / SPLIT_FILE_NAME

    wav_files: dict[str, Path] = {}
    text_files: dict[str, Path] = {}
    excluded = {SPLIT_FILE_NAME.lower(), DIAGNOSIS_FILE_NAME.lower(), split_path.name.lower()}
    for entry in sorted(root.iterdir()):
        if not entry.is_file():
            continue
        suffix = entry.suffix.lower()
        if suffix == ".wav":
            wav_files[entry.stem] = entry
        elif suffix == ".txt" and entry.name.lower() not in excluded:
            text_files[entry.stem] = entry

    problems: list[DataProblem] = []
    warnings: list[DataProblem] = []
    notes: list[str] = []

    # An annotation file is a .txt with a same-named .wav; other .txt files are ignored unless
    # their name looks like a recording (then the wav is missing).
    annotation_stems = sorted(set(text_files) & set(wav_files))
    orphan_texts = sorted(set(text_files) - set(wav_files))
    ignored = [name for name in orphan_texts if not RECORDING_NAME_PATTERN.match(name)]
    if ignored:
        notes.append(f"ignored {len(ignored)} other .txt file(s): {', '.join(ignored[:5])}")

    entries: dict[str, tuple[str, int]] = {}
    has_split_file = split_path.is_file()
    if has_split_file:
        entries, split_problems = parse_split_file(split_path)
        problems.extend(split_problems)
    if not annotation_stems and not entries:
        raise UserError(
            f"no recordings in {root}: expected NAME.wav + NAME.txt pairs as in "
            f"ICBHI_final_database{_nested_database_hint(root)}"
        )
    if not has_split_file:
        problems.append(
            DataProblem(
                str(split_path),
                None,
                "split file not found; pass --split-file (CLI) or set data.split_file",
                is_missing_file=True,
            )
        )

    for wrong, right in SPLIT_NAME_FIXES.items():
        has_files = wrong in wav_files or wrong in text_files
        if wrong in entries and not has_files and right in wav_files and right not in entries:
            entries[right] = entries.pop(wrong)
            notes.append(f"split entry {wrong} mapped to {right} (known ICBHI naming error)")

    for name, (_, line) in sorted(entries.items()):
        if name in annotation_stems:
            continue
        if name in wav_files:
            problems.append(
                DataProblem(
                    str(root / f"{name}.txt"),
                    None,
                    f"annotation file missing (the split file lists {name} and {name}.wav exists)",
                    is_missing_file=True,
                )
            )
        elif name in text_files:
            problems.append(DataProblem(str(root / f"{name}.wav"), None, "wav file missing", True))
        else:
            problems.append(
                DataProblem(
                    str(split_path),
                    line,
                    f"split entry without files: no {name}.wav or {name}.txt in {root}",
                    is_missing_file=True,
                )
            )
    for name in orphan_texts:
        if name not in ignored and name not in entries:
            problems.append(DataProblem(str(root / f"{name}.wav"), None, "wav file missing", True))

    recordings: list[Recording] = []
    audio: dict[str, AudioInfo] = {}
    num_clipped = 0
    for name in annotation_stems:
        annotation_path, wav_path = text_files[name], wav_files[name]
        cycles, cycle_problems = parse_annotation_file(annotation_path, name)
        problems.extend(cycle_problems)
        split = entries[name][0] if name in entries else UNASSIGNED
        if has_split_file and name not in entries:
            problems.append(
                DataProblem(
                    str(wav_path), None, f"recording missing from the split file {split_path}"
                )
            )
        info = None
        if read_headers or decode_audio:
            try:
                info = read_audio_info(wav_path)
            except ValueError as error:
                problems.append(DataProblem(str(wav_path), None, _strip_path(error, wav_path)))
        if info is not None:
            audio[name] = info
            problems.extend(_audio_problems(wav_path, info, decode_audio))
            for cycle in cycles:
                problem = cycle_position_problem(cycle, info.duration_seconds)
                if problem is not None:
                    problems.append(DataProblem(str(annotation_path), cycle.line, problem))
                elif cycle.end_seconds > info.duration_seconds:
                    num_clipped += 1
        recordings.append(
            Recording(
                name=name,
                patient_id=patient_id_of(name),
                wav_path=wav_path,
                annotation_path=annotation_path,
                split=split,
                cycles=tuple(cycles),
                sample_rate_hz=info.sample_rate_hz if info else None,
                num_frames=info.num_frames if info else None,
            )
        )
    if num_clipped:
        notes.append(
            f"{num_clipped} cycle(s) end at most {END_TOLERANCE_SECONDS} s past their recording "
            "and were clipped to its end"
        )

    patients = {split: {r.patient_id for r in recordings if r.split == split} for split in SPLITS}
    shared = sorted(patients["train"] & patients["test"], key=_natural_key)
    if shared:
        warnings.append(
            DataProblem(
                str(split_path),
                None,
                f"{len(shared)} patient(s) appear in both official train and test: "
                f"{', '.join(shared[:10])}",
            )
        )

    problems.sort(key=lambda p: (p.path, p.line or 0))
    return DatasetScan(
        root=root,
        split_file=split_path,
        recordings=recordings,
        problems=problems,
        warnings=warnings,
        notes=notes,
        audio=audio,
        num_cycles_clipped=num_clipped,
    )


def _strip_path(error: Exception, path: Path) -> str:
    text = str(error)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _audio_problems(path: Path, info: AudioInfo, decode_audio: bool) -> list[DataProblem]:
    if info.channels != 1:
        return [DataProblem(str(path), None, _channels_message(info.channels))]
    if info.num_frames == 0:
        return [DataProblem(str(path), None, _EMPTY_MESSAGE)]
    if decode_audio:
        try:
            read_wav(path)
        except ValueError as error:
            return [DataProblem(str(path), None, _strip_path(error, path))]
    return []


def _natural_key(text: str) -> tuple[int, str]:
    return (int(text), text) if text.isdigit() else (1 << 62, text)


def load_icbhi_index(
    root: str | os.PathLike[str], split_file: str | os.PathLike[str] | None = None
) -> list[Recording]:
    """Loads the recording index strictly (wav headers checked, samples not decoded).

    Args:
        root: ICBHI_final_database-style folder.
        split_file: official split file; None: <root>/ICBHI_challenge_train_test.txt.

    Returns:
        Recordings sorted by name, each with its official split and cycles.

    Raises:
        FileNotFoundError / ValueError: one line naming the first problem (file and line).
    """
    scan = scan_dataset(root, split_file, read_headers=True)
    scan.raise_first_problem()
    return scan.recordings
