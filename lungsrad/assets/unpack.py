"""The ICBHI database from its zip: test the archive and its layout, unpack into a temporary
folder beside the destination, put the official split file (with the known fix of its
226_1b1 entry) beside the wavs, run `lungsrad data inspect`'s check, then rename into place."""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lungsrad.assets.download import check_free_space
from lungsrad.errors import UserError, disk_full_is_user_error
from lungsrad.files import fsync_directory


@dataclass(frozen=True)
class DatabaseVerdict:
    """What `lungsrad data inspect` says of the unpacked folder."""

    folder: Path
    num_recordings: int
    num_patients: int
    num_cycles: int
    notes: tuple[str, ...]

    def format_text(self) -> str:
        lines = [
            f"{self.folder}: {self.num_recordings} recordings, {self.num_patients} patients, "
            f"{self.num_cycles} cycles; usable: yes",
            *(f"  note: {note}" for note in self.notes),
            f"  full report: lungsrad data inspect {self.folder}",
        ]
        return "\n".join(lines)


def recordings_folder(archive: Path, *, label: str) -> tuple[str, list[zipfile.ZipInfo]]:
    """Tests the zip (every member's CRC) and finds the one folder of NAME.wav + NAME.txt pairs.

    Returns:
        (the folder's path inside the archive, '' at its top; the members directly in it).

    Raises:
        UserError: not a zip, a damaged member, an unsafe member path, or no recordings folder.
    """
    from lungsrad.data.layout import RECORDING_NAME_PATTERN

    try:
        with zipfile.ZipFile(archive) as opened:
            damaged = opened.testzip()
            members = opened.infolist()
    except (zipfile.BadZipFile, EOFError) as error:
        raise UserError(f"{label}: {archive} is not a readable zip archive ({error})") from None
    if damaged is not None:
        raise UserError(f"{label}: {archive} is damaged: member {damaged} fails its CRC check")
    stems: dict[str, dict[str, set[str]]] = {}  # folder -> suffix -> stems
    for member in members:
        name = member.filename
        if name.startswith("/") or ".." in name.split("/"):
            raise UserError(f"{label}: {archive} has an unsafe member path {name!r}")
        folder, base = posixpath.split(name)
        stem, suffix = posixpath.splitext(base)
        if not member.is_dir() and RECORDING_NAME_PATTERN.match(stem):
            stems.setdefault(folder, {}).setdefault(suffix.lower(), set()).add(stem)
    with_pairs = {
        folder: len(found.get(".wav", set()) & found.get(".txt", set()))
        for folder, found in stems.items()
    }
    with_pairs = {folder: count for folder, count in with_pairs.items() if count}
    if len(with_pairs) != 1:
        where = ", ".join(sorted(f or "(top)" for f in with_pairs)) or "none"
        raise UserError(
            f"{label}: {archive} does not have the ICBHI layout: expected one folder of "
            f"NAME.wav + NAME.txt recordings (e.g. ICBHI_final_database/), found {where}"
        )
    (folder,) = with_pairs
    inside = [m for m in members if not m.is_dir() and posixpath.dirname(m.filename) == folder]
    return folder, inside


def fixed_split_text(text: str, folder: Path) -> str:
    """The split file with the known wrong entries renamed (the data loader's SPLIT_NAME_FIXES,
    under the same rule: only when the listed recording has no files and the right one does)."""
    from lungsrad.data.layout import SPLIT_NAME_FIXES

    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        fields = line.split()
        if not fields or fields[0] not in SPLIT_NAME_FIXES:
            continue
        wrong, right = fields[0], SPLIT_NAME_FIXES[fields[0]]
        if not (folder / f"{wrong}.wav").exists() and (folder / f"{right}.wav").exists():
            lines[index] = line.replace(wrong, right, 1)
    return "".join(lines)


def unpack_database(
    archive: Path, split_file: Path, destination: Path, *, label: str, replace: bool
) -> DatabaseVerdict:
    """Unpacks the recordings of `archive` and the split file into `destination` (atomically:
    a temporary folder renamed into place once `lungsrad data inspect`'s check passes).

    Raises:
        UserError: the archive's layout, no space, or data the inspection finds unusable.
        FileExistsError: `destination` exists and `replace` is off.
    """
    from lungsrad.data.layout import SPLIT_FILE_NAME

    if destination.exists() and not replace:
        raise FileExistsError(f"{destination} exists; pass --force to replace it")
    folder, members = recordings_folder(archive, label=label)
    check_free_space(
        destination.parent, sum(member.file_size for member in members), destination.name
    )
    staging = destination.parent / f".{destination.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir(parents=True)
    try:
        _extract(archive, members, staging)
        text = split_file.read_text(encoding="utf-8")
        (staging / SPLIT_FILE_NAME).write_text(fixed_split_text(text, staging), encoding="utf-8")
        verdict = _inspect(staging, label=label)
        _move_into_place(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DatabaseVerdict(destination, *verdict)


def _extract(archive: Path, members: list[zipfile.ZipInfo], staging: Path) -> None:
    """Writes each member into `staging` (flat); a full disk is one line."""
    with disk_full_is_user_error(
        lambda: f"unpacking {archive} into {staging.parent}; free some space and run the same "
        "command again"
    ), zipfile.ZipFile(archive) as opened:
        for member in members:
            target = staging / posixpath.basename(member.filename)
            with opened.open(member) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def _inspect(folder: Path, *, label: str) -> tuple[int, int, int, tuple[str, ...]]:
    from lungsrad.data.inspect import inspect_dataset

    report = inspect_dataset(folder)
    if not report.is_usable:
        first = str(report.problems[0]) if report.problems else "no breathing cycles found"
        first = first.replace(str(folder), "<unpacked>")
        raise UserError(f"{label}: the unpacked database is not usable: {first}")
    notes = tuple(note.replace(str(folder), "<unpacked>") for note in report.notes)
    return report.num_recordings, report.num_patients, report.num_cycles, notes


def _move_into_place(staging: Path, destination: Path) -> None:
    """Renames `staging` onto `destination`; an existing destination is moved aside first and
    removed only once the new folder is in place."""
    old = None
    if destination.exists():
        old = destination.parent / f".{destination.name}.{uuid.uuid4().hex[:8]}.old"
        os.rename(destination, old)
    os.rename(staging, destination)
    fsync_directory(destination.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
