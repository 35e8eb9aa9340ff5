"""ICBHI 2017 database reader: recordings, cycle labels, the official split and cycle waveforms.

Follows the ICBHI_final_database layout (Rocha et al., 2019) and the cycle slicing and padding of
the patch-mix / DASS reference code (`util/icbhi_util.py`: resample and fade the recording,
slice, pad), with switches for lungsrad 1's choices (DataConfig: fade, cycle_slicing, zero_padding).
torch is imported inside the waveform functions only, so `lungsrad data inspect` starts fast.
"""

from __future__ import annotations

import functools
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


# The reference fades 1/16 s (int(rate / 16): 1000 samples at 16 kHz) in and out of every recording
# and out of every repeat-padded cycle (util/icbhi_util.py, `fade_samples_ratio = 16`).
FADE_FRACTION_OF_A_SECOND = 16


def fade_length(rate_hz: int) -> int:
    """Samples of the reference's linear fades at `rate_hz`: int(rate / 16)."""
    return int(rate_hz / FADE_FRACTION_OF_A_SECOND)


@functools.lru_cache(maxsize=32)
def _resample_transform(source_rate_hz: int, target_rate_hz: int) -> Any:
    # torchaudio's Resample precomputes its sinc kernel: build it once per rate pair.
    import torchaudio

    return torchaudio.transforms.Resample(source_rate_hz, target_rate_hz)


def resample(
    waveform: torch.Tensor,
    source_rate_hz: int,
    target_rate_hz: int,
    *,
    use_transform: bool = False,
) -> torch.Tensor:
    """Band-limited resampling of a whole recording: (samples,) -> (samples * target / source,).

    Args:
        use_transform: torchaudio.transforms.Resample (the reference code, data.cycle_slicing
            truncated) instead of torchaudio.functional.resample (lungsrad 1, rounded). Same
            filter; the transform's precomputed kernel differs in the last bits (about 1e-5).
    """
    import torchaudio

    if source_rate_hz == target_rate_hz:
        return waveform
    if use_transform:
        return _resample_transform(source_rate_hz, target_rate_hz)(waveform)
    return torchaudio.functional.resample(waveform, source_rate_hz, target_rate_hz)


def apply_fade(
    waveform: torch.Tensor, *, fade_in_samples: int, fade_out_samples: int
) -> torch.Tensor:
    """Linear fade in and out with torchaudio.transforms.Fade, as the reference code fades.

    Args:
        waveform: (samples,); fades longer than the waveform are shortened to its length (the
            reference never meets such a waveform: recordings are seconds, cycles 8 s).

    Returns:
        (samples,)
    """
    import torchaudio

    length = waveform.shape[-1]
    fade = torchaudio.transforms.Fade(
        fade_in_len=min(fade_in_samples, length),
        fade_out_len=min(fade_out_samples, length),
        fade_shape="linear",
    )
    return fade(waveform)


def fit_to_length(
    waveform: torch.Tensor,
    num_samples: int,
    padding: str,
    *,
    zero_padding: str = "end",
    fade_out_samples: int = 0,
) -> torch.Tensor:
    """Cuts or pads a cycle to exactly `num_samples`, as the reference's cut_pad_sample does.

    A cycle longer than `num_samples` is cut to its first `num_samples`; any other (equal length
    included) is padded: tiled and cropped, then faded out ("repeat"), or placed among zeros
    without a fade ("zero").

    Args:
        waveform: (samples,), at least one sample.
        num_samples: target length.
        padding: "repeat" tiles the cycle (reference default), "zero" pads with zeros.
        zero_padding: "centre" puts the cycle at offset (num_samples - samples) // 2 (reference),
            "end" appends the zeros (lungsrad 1).
        fade_out_samples: linear fade-out of a repeat-padded cycle (0: none).

    Returns:
        (num_samples,)
    """
    import torch

    length = waveform.shape[-1]
    if length == 0:
        raise ValueError("cannot pad an empty cycle")
    if padding not in ("repeat", "zero"):
        raise ValueError(f"data.padding must be 'repeat' or 'zero', got {padding!r}")
    if zero_padding not in ("centre", "end"):
        raise ValueError(f"data.zero_padding must be 'centre' or 'end', got {zero_padding!r}")
    if length > num_samples:
        return waveform[:num_samples]
    if padding == "zero":
        before = (num_samples - length) // 2 if zero_padding == "centre" else 0
        return torch.nn.functional.pad(waveform, (before, num_samples - length - before))
    tiled = waveform.repeat(math.ceil(num_samples / length))[:num_samples]
    if fade_out_samples:
        tiled = apply_fade(tiled, fade_in_samples=0, fade_out_samples=fade_out_samples)
    return tiled


def sample_index(seconds: float, rate_hz: int, cycle_slicing: str) -> int:
    """The sample at `seconds`: int(t * rate) ("truncated", the reference) or
    floor(t * rate + 1e-6) ("rounded", lungsrad 1: 0.3 s * 16 kHz is 4800, not 4799)."""
    if cycle_slicing == "truncated":
        return int(seconds * rate_hz)
    if cycle_slicing == "rounded":
        return int(math.floor(seconds * rate_hz + 1e-6))
    raise ValueError(f"data.cycle_slicing must be 'truncated' or 'rounded', got {cycle_slicing!r}")


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
        waveform: (samples,) the whole recording at data_config.sample_rate_hz (already faded
            when data.fade is "reference").
        source_duration_seconds: duration of the original file (for the end tolerance).

    Returns:
        One (segment_seconds * sample_rate_hz,) tensor per cycle.
    """
    rate = data_config.sample_rate_hz
    num_samples = int(round(data_config.segment_seconds * rate))
    fade_out = fade_length(rate) if data_config.fade == "reference" else 0
    segments = []
    for cycle in recording.cycles:
        problem = cycle_position_problem(cycle, source_duration_seconds)
        if problem is not None:
            raise UserError(f"{recording.annotation_path}:{cycle.line}: {problem}")
        start = sample_index(cycle.start_seconds, rate, data_config.cycle_slicing)
        end = sample_index(cycle.end_seconds, rate, data_config.cycle_slicing)
        end = min(end, waveform.shape[-1])
        if end <= start:
            raise UserError(
                f"{recording.annotation_path}:{cycle.line}: cycle is shorter than one sample at "
                f"{rate} Hz"
            )
        segment = fit_to_length(
            waveform[start:end],
            num_samples,
            data_config.padding,
            zero_padding=data_config.zero_padding,
            fade_out_samples=fade_out,
        )
        segments.append(segment)
    return segments


def prepare_recording(
    samples: torch.Tensor, source_rate_hz: int, data_config: DataConfig
) -> torch.Tensor:
    """A whole decoded recording as the cycles are cut from it: resampled to
    data.sample_rate_hz, then (data.fade "reference") faded in and out.

    Args:
        samples: (samples,) float32 at source_rate_hz.

    Returns:
        (samples * sample_rate_hz / source_rate_hz,) float32
    """
    rate = data_config.sample_rate_hz
    waveform = resample(
        samples, source_rate_hz, rate, use_transform=data_config.cycle_slicing == "truncated"
    )
    if data_config.fade == "reference":
        fade = fade_length(rate)
        waveform = apply_fade(waveform, fade_in_samples=fade, fade_out_samples=fade)
    return waveform


def load_cycle_waveforms(recording: Recording, data_config: DataConfig) -> list[torch.Tensor]:
    """Decodes a recording once, resamples (and fades) it once, and returns its cycles.

    Returns:
        One float32 tensor (segment_seconds * sample_rate_hz,) per cycle (8 s at 16 kHz:
        (128000,)), in annotation order.

    Raises:
        ValueError: unreadable/stereo/NaN audio, or a cycle outside the recording.
    """
    import torch

    samples, source_rate = read_wav(recording.wav_path)
    waveform = prepare_recording(torch.from_numpy(samples), source_rate, data_config)
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
    wav_files, text_files = _list_recording_files(root, split_path)

    problems: list[DataProblem] = []
    notes: list[str] = []

    # An annotation file is a .txt with a same-named .wav; other .txt files are ignored unless
    # their name looks like a recording (then the wav is missing).
    annotation_stems = sorted(set(text_files) & set(wav_files))
    orphan_texts = sorted(set(text_files) - set(wav_files))
    ignored = [name for name in orphan_texts if not RECORDING_NAME_PATTERN.match(name)]
    if ignored:
        notes.append(f"ignored {len(ignored)} other .txt file(s): {', '.join(ignored[:5])}")

    has_split_file = split_path.is_file()
    entries, split_problems = _read_split_entries(split_path, has_split_file)
    if not annotation_stems and not entries:
        raise UserError(
            f"no recordings in {root}: expected NAME.wav + NAME.txt pairs as in "
            f"ICBHI_final_database{_nested_database_hint(root)}"
        )
    problems.extend(split_problems)
    notes.extend(_fix_split_names(entries, wav_files, text_files))
    problems.extend(_missing_file_problems(root, split_path, entries, wav_files, text_files))
    for name in orphan_texts:
        if name not in ignored and name not in entries:
            problems.append(DataProblem(str(root / f"{name}.wav"), None, "wav file missing", True))

    recordings: list[Recording] = []
    audio: dict[str, AudioInfo] = {}
    num_clipped = 0
    for name in annotation_stems:
        recording, info, recording_problems, clipped = _read_recording(
            name,
            wav_path=wav_files[name],
            annotation_path=text_files[name],
            split_entry=entries.get(name),
            split_path=split_path if has_split_file else None,
            read_headers=read_headers or decode_audio,
            decode_audio=decode_audio,
        )
        recordings.append(recording)
        problems.extend(recording_problems)
        num_clipped += clipped
        if info is not None:
            audio[name] = info
    if num_clipped:
        notes.append(
            f"{num_clipped} cycle(s) end at most {END_TOLERANCE_SECONDS} s past their recording "
            "and were clipped to its end"
        )

    problems.sort(key=lambda p: (p.path, p.line or 0))
    return DatasetScan(
        root=root,
        split_file=split_path,
        recordings=recordings,
        problems=problems,
        warnings=_shared_patient_warnings(recordings, split_path),
        notes=notes,
        audio=audio,
        num_cycles_clipped=num_clipped,
    )


def _list_recording_files(root: Path, split_path: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """{stem: path} of the .wav files and of the .txt files other than the split/diagnosis files."""
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
    return wav_files, text_files


def _read_split_entries(
    split_path: Path, exists: bool
) -> tuple[dict[str, tuple[str, int]], list[DataProblem]]:
    """The split file's name -> (split, line), and its problems (a missing file is one)."""
    if exists:
        return parse_split_file(split_path)
    missing = DataProblem(
        str(split_path),
        None,
        "split file not found; pass --split-file (CLI) or set data.split_file",
        is_missing_file=True,
    )
    return {}, [missing]


def _fix_split_names(
    entries: dict[str, tuple[str, int]], wav_files: dict[str, Path], text_files: dict[str, Path]
) -> list[str]:
    """Renames the split file's known wrong entries in `entries`; returns a note per fix."""
    notes = []
    for wrong, right in SPLIT_NAME_FIXES.items():
        has_files = wrong in wav_files or wrong in text_files
        if wrong in entries and not has_files and right in wav_files and right not in entries:
            entries[right] = entries.pop(wrong)
            notes.append(f"split entry {wrong} mapped to {right} (known ICBHI naming error)")
    return notes


def _missing_file_problems(
    root: Path,
    split_path: Path,
    entries: dict[str, tuple[str, int]],
    wav_files: dict[str, Path],
    text_files: dict[str, Path],
) -> list[DataProblem]:
    """A problem for each split entry whose wav or annotation file is missing."""
    problems = []
    for name, (_, line) in sorted(entries.items()):
        if name in wav_files and name in text_files:
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
    return problems


def _read_recording(
    name: str,
    *,
    wav_path: Path,
    annotation_path: Path,
    split_entry: tuple[str, int] | None,
    split_path: Path | None,
    read_headers: bool,
    decode_audio: bool,
) -> tuple[Recording, AudioInfo | None, list[DataProblem], int]:
    """One recording's annotations (and header): (recording, header or None, its problems,
    cycles clipped to the recording end). `split_path` None: there is no split file."""
    cycles, problems = parse_annotation_file(annotation_path, name)
    split = split_entry[0] if split_entry is not None else UNASSIGNED
    if split_path is not None and split_entry is None:
        problems.append(
            DataProblem(str(wav_path), None, f"recording missing from the split file {split_path}")
        )
    info = None
    num_clipped = 0
    if read_headers:
        try:
            info = read_audio_info(wav_path)
        except ValueError as error:
            problems.append(DataProblem(str(wav_path), None, _strip_path(error, wav_path)))
    if info is not None:
        problems.extend(_audio_problems(wav_path, info, decode_audio))
        for cycle in cycles:
            problem = cycle_position_problem(cycle, info.duration_seconds)
            if problem is not None:
                problems.append(DataProblem(str(annotation_path), cycle.line, problem))
            elif cycle.end_seconds > info.duration_seconds:
                num_clipped += 1
    recording = Recording(
        name=name,
        patient_id=patient_id_of(name),
        wav_path=wav_path,
        annotation_path=annotation_path,
        split=split,
        cycles=tuple(cycles),
        sample_rate_hz=info.sample_rate_hz if info else None,
        num_frames=info.num_frames if info else None,
    )
    return recording, info, problems, num_clipped


def _shared_patient_warnings(recordings: list[Recording], split_path: Path) -> list[DataProblem]:
    patients = {split: {r.patient_id for r in recordings if r.split == split} for split in SPLITS}
    shared = sorted(patients["train"] & patients["test"], key=_natural_key)
    if not shared:
        return []
    return [
        DataProblem(
            str(split_path),
            None,
            f"{len(shared)} patient(s) appear in both official train and test: "
            f"{', '.join(shared[:10])}",
        )
    ]


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
