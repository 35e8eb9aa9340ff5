"""ICBHI 2017 database reader: the recordings of a dataset folder with their official split and
labelled cycles (`load_icbhi_index`), and every problem with them (`scan_dataset`).

The files themselves are read by lungsrad/data/annotations.py (annotation and split files) and
lungsrad/data/waveform.py (wav headers and samples).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lungsrad.assets.paths import DATA_ROOT, SPLIT_FILE, resolve_reference
from lungsrad.data.annotations import (
    END_TOLERANCE_SECONDS,
    DataProblem,
    Recording,
    cycle_position_problem,
    parse_annotation_file,
    parse_split_file,
    patient_id_of,
)
from lungsrad.data.layout import (
    DIAGNOSIS_FILE_NAME,
    RECORDING_NAME_PATTERN,
    SPLIT_FILE_NAME,
    SPLIT_NAME_FIXES,
    SPLITS,
    archive_hint,
)
from lungsrad.data.waveform import (
    EMPTY_WAV_MESSAGE,
    AudioInfo,
    channels_message,
    read_audio_info,
    read_wav,
)
from lungsrad.errors import UserError

UNASSIGNED = "unassigned"  # only inside a DatasetScan: a recording the split file does not list


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
        """Raises the first problem as a one-line UserError / FileNotFoundError (if any)."""
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
        root: ICBHI_final_database-style folder (NAME.wav + NAME.txt per recording), or
            `fetch:icbhi` (the fetched database).
        split_file: official split file (or `fetch:icbhi`); None:
            <root>/ICBHI_challenge_train_test.txt.
        read_headers: read wav headers (sample rate, length, channels) and check cycle times.
        decode_audio: also decode the samples (finds NaN/inf samples; slow on big data).

    Raises:
        FileNotFoundError / NotADirectoryError: `root` does not exist or is not a folder.
        UserError: `root` holds no recordings at all.
    """
    root, split_path = _dataset_paths(root, split_file)
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

    recordings, audio, num_clipped = _read_recordings(
        annotation_stems,
        wav_files=wav_files,
        text_files=text_files,
        entries=entries,
        split_path=split_path if has_split_file else None,
        read_headers=read_headers or decode_audio,
        decode_audio=decode_audio,
        problems=problems,
    )
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


def _dataset_paths(
    root: str | os.PathLike[str], split_file: str | os.PathLike[str] | None
) -> tuple[Path, Path]:
    """The dataset folder and split file (`fetch:icbhi` resolved), the folder checked."""
    root = Path(resolve_reference(str(root), key=DATA_ROOT))
    if split_file is not None:
        split_file = resolve_reference(str(split_file), key=SPLIT_FILE)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset path is not a folder: {root}{archive_hint(root)}")
    return root, Path(split_file) if split_file is not None else root / SPLIT_FILE_NAME


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


def _read_recordings(
    names: list[str],
    *,
    wav_files: dict[str, Path],
    text_files: dict[str, Path],
    entries: dict[str, tuple[str, int]],
    split_path: Path | None,
    read_headers: bool,
    decode_audio: bool,
    problems: list[DataProblem],
) -> tuple[list[Recording], dict[str, AudioInfo], int]:
    """The recordings `names` (annotations and headers): (recordings, name -> header, cycles
    clipped to their recording's end); their problems are appended to `problems`."""
    recordings: list[Recording] = []
    audio: dict[str, AudioInfo] = {}
    num_clipped = 0
    for name in names:
        recording, info, recording_problems, clipped = _read_recording(
            name,
            wav_path=wav_files[name],
            annotation_path=text_files[name],
            split_entry=entries.get(name),
            split_path=split_path,
            read_headers=read_headers,
            decode_audio=decode_audio,
        )
        recordings.append(recording)
        problems.extend(recording_problems)
        num_clipped += clipped
        if info is not None:
            audio[name] = info
    return recordings, audio, num_clipped


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
        return [DataProblem(str(path), None, channels_message(info.channels))]
    if info.num_frames == 0:
        return [DataProblem(str(path), None, EMPTY_WAV_MESSAGE)]
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
        FileNotFoundError / UserError: one line naming the first problem (file and line).
    """
    scan = scan_dataset(root, split_file, read_headers=True)
    scan.raise_first_problem()
    return scan.recordings
