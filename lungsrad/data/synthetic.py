"""Tiny synthetic datasets in the exact ICBHI_final_database layout, for tests and smoke runs.

Cycle content follows the clinical descriptions the ICBHI labels stand for (Rocha et al., 2019):
normal = band-limited breath noise; crackle = short broadband transients; wheeze = a sustained
narrowband tone (100-1000 Hz) with harmonics; both = the two together (synthetic_audio.py).
Deterministic per seed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from lungsrad.data.layout import DIAGNOSIS_FILE_NAME, SPLIT_FILE_NAME, SPLITS
from lungsrad.data.synthetic_audio import synthesize_recording
from lungsrad.errors import UserError
from lungsrad.files import atomic_destination, write_text_atomic
from lungsrad.metrics import CLASS_NAMES

# Device -> sample rate; together they cover the three rates of the real database.
DEVICE_RATES_HZ: tuple[tuple[str, int], ...] = (
    ("Meditron", 4000),
    ("LittC2SE", 10000),
    ("AKGC417L", 44100),
)
# Every ICBHI device, for datasets with chosen devices (Litt3200 records at 4 kHz like Meditron).
LAYOUT_DEVICE_RATES_HZ: dict[str, int] = {**dict(DEVICE_RATES_HZ), "Litt3200": 4000}
SUBTYPES: tuple[str, ...] = ("PCM_16", "PCM_24")
CHEST_LOCATIONS: tuple[str, ...] = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
ACQUISITION_MODES: tuple[str, ...] = ("sc", "mc")
DIAGNOSES: tuple[str, ...] = ("COPD", "URTI", "Healthy", "Bronchiectasis", "Pneumonia", "LRTI")
CLASS_PROBABILITIES: tuple[float, ...] = (0.4, 0.25, 0.2, 0.15)  # normal, crackle, wheeze, both
TRAIN_PATIENT_SHARE = 0.6

# Lists the files one run wrote, so that --overwrite replaces exactly those and nothing else.
# A dot file: the ICBHI reader only looks at .wav and .txt files.
MARKER_FILE_NAME = ".lungsrad_synthetic.json"


@dataclass(frozen=True)
class SyntheticSummary:
    """What `write_synthetic_dataset` wrote."""

    out_dir: Path
    seed: int
    num_recordings: int
    patients: dict[str, int]  # split -> patients
    recordings: dict[str, int]  # split -> recordings
    cycles: dict[str, dict[str, int]]  # split -> class name -> cycles
    sample_rates_hz: dict[int, int] = field(default_factory=dict)  # rate -> recordings
    subtypes: dict[str, int] = field(default_factory=dict)  # PCM_16 / PCM_24 -> recordings

    @property
    def num_cycles(self) -> int:
        return sum(sum(counts.values()) for counts in self.cycles.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "seed": self.seed,
            "num_recordings": self.num_recordings,
            "num_cycles": self.num_cycles,
            "patients": self.patients,
            "recordings": self.recordings,
            "splits": self.cycles,
            "sample_rates_hz": {str(rate): n for rate, n in self.sample_rates_hz.items()},
            "subtypes": self.subtypes,
        }

    def format_text(self) -> str:
        lines = [
            f"synthetic ICBHI-layout dataset in {self.out_dir} (seed {self.seed})",
            f"  recordings: {self.num_recordings}  cycles: {self.num_cycles}",
        ]
        for split in SPLITS:
            counts = ", ".join(f"{name} {self.cycles[split][name]}" for name in CLASS_NAMES)
            lines.append(
                f"  {split}: {self.patients[split]} patients, {self.recordings[split]} "
                f"recordings; cycles: {counts}"
            )
        rates = ", ".join(f"{rate} Hz x{n}" for rate, n in sorted(self.sample_rates_hz.items()))
        subtypes = ", ".join(f"{name} x{n}" for name, n in sorted(self.subtypes.items()))
        lines.append(f"  sample rates: {rates}; bit depths: {subtypes}")
        return "\n".join(lines)


@dataclass
class _PlannedRecording:
    name: str
    patient_id: str
    split: str
    device: str
    sample_rate_hz: int
    subtype: str
    duration_seconds: float
    cycles: list[tuple[float, float, int]]  # (start, end, label)


@dataclass(frozen=True)
class SyntheticRecordingSpec:
    """One recording of a dataset with chosen patients and devices (tests of the protocols)."""

    patient_id: str  # digits, e.g. "156"
    device: str  # AKGC417L | LittC2SE | Litt3200 | Meditron
    split: str  # "train" | "test": its line in the official split file


# ---------------------------------------------------------------------------------------------
# Plan: names, splits, cycle times and labels


def _patient_recording_counts(rng: np.random.Generator, num_recordings: int) -> list[int]:
    counts: list[int] = []
    remaining = num_recordings
    while remaining:
        count = min(int(rng.integers(1, 4)), remaining)
        if not counts and count == num_recordings:  # at least two patients: one per split
            count = num_recordings - 1
        counts.append(count)
        remaining -= count
    return counts


def _cycle_lengths(rng: np.random.Generator, num_cycles: int, total: float) -> np.ndarray:
    for _ in range(50):
        lengths = rng.dirichlet(np.full(num_cycles, 4.0)) * total
        if lengths.min() >= 1.0 and lengths.max() <= 6.0:
            return lengths
    return np.full(num_cycles, total / num_cycles)


def _plan_cycle_times(
    rng: np.random.Generator, num_cycles: int
) -> tuple[float, list[tuple[float, float]]]:
    lead = float(rng.uniform(0.05, 0.6))
    gaps = rng.uniform(0.0, 0.3, size=num_cycles - 1)
    tail = float(rng.uniform(0.1, 0.5))
    overhead = lead + float(gaps.sum()) + tail
    low = max(10.0, num_cycles * 1.0 + overhead)
    high = min(20.0, num_cycles * 6.0 + overhead)
    duration = float(rng.uniform(low, high))
    lengths = _cycle_lengths(rng, num_cycles, duration - overhead)
    times = []
    position = lead
    for index, length in enumerate(lengths):
        # Millisecond times like the real files, without leaving the 1-6 s range by rounding.
        start = round(position, 3)
        end = round(start + min(max(round(float(length), 3), 1.0), 6.0), 3)
        times.append((start, end))
        position += float(length) + (float(gaps[index]) if index < num_cycles - 1 else 0.0)
    return duration, times


def _ensure_every_class(rng: np.random.Generator, labels: list[int]) -> None:
    """Relabels cycles in place until all four classes occur (needs >= 4 cycles)."""
    for label in range(len(CLASS_NAMES)):
        if label in labels:
            continue
        counts = Counter(labels)
        most_common = counts.most_common(1)[0][0]
        positions = [i for i, value in enumerate(labels) if value == most_common]
        labels[positions[int(rng.integers(len(positions)))]] = label


def _plan_layout(
    rng: np.random.Generator, layout: list[SyntheticRecordingSpec]
) -> list[_PlannedRecording]:
    """Plans with the given patient, device and split per recording."""
    subtypes = rng.permutation(np.arange(len(layout)) % len(SUBTYPES))
    per_patient: Counter[str] = Counter()
    plans = []
    for position, spec in enumerate(layout):
        per_patient[spec.patient_id] += 1
        location = CHEST_LOCATIONS[int(rng.integers(len(CHEST_LOCATIONS)))]
        mode = ACQUISITION_MODES[int(rng.integers(len(ACQUISITION_MODES)))]
        plans.append(
            _PlannedRecording(
                name=f"{spec.patient_id}_{per_patient[spec.patient_id]}b1_{location}_{mode}_"
                f"{spec.device}",
                patient_id=spec.patient_id,
                split=spec.split,
                device=spec.device,
                sample_rate_hz=LAYOUT_DEVICE_RATES_HZ[spec.device],
                subtype=SUBTYPES[int(subtypes[position])],
                duration_seconds=0.0,
                cycles=[],
            )
        )
    _plan_cycles(rng, plans)
    return sorted(plans, key=lambda plan: plan.name)


def _check_layout(layout: list[SyntheticRecordingSpec]) -> None:
    for spec in layout:
        if not spec.patient_id.isdigit():
            raise UserError(f"synthetic layout: patient ids are digits, got {spec.patient_id!r}")
        if spec.device not in LAYOUT_DEVICE_RATES_HZ:
            raise UserError(
                f"synthetic layout: device must be one of {', '.join(LAYOUT_DEVICE_RATES_HZ)}, "
                f"got {spec.device!r}"
            )
        if spec.split not in SPLITS:
            raise UserError(f"synthetic layout: split must be train or test, got {spec.split!r}")


def _plan(rng: np.random.Generator, num_recordings: int) -> list[_PlannedRecording]:
    counts = _patient_recording_counts(rng, num_recordings)
    patient_ids = [str(101 + i) for i in range(len(counts))]
    order = rng.permutation(len(patient_ids))
    num_train = min(max(int(round(TRAIN_PATIENT_SHARE * len(patient_ids))), 1), len(counts) - 1)
    train_patients = {patient_ids[i] for i in order[:num_train]}

    devices = rng.permutation(np.arange(num_recordings) % len(DEVICE_RATES_HZ))
    subtypes = rng.permutation(np.arange(num_recordings) % len(SUBTYPES))
    plans: list[_PlannedRecording] = []
    for patient_id, count in zip(patient_ids, counts, strict=True):
        for recording_index in range(1, count + 1):
            device, rate = DEVICE_RATES_HZ[int(devices[len(plans)])]
            location = CHEST_LOCATIONS[int(rng.integers(len(CHEST_LOCATIONS)))]
            mode = ACQUISITION_MODES[int(rng.integers(len(ACQUISITION_MODES)))]
            plans.append(
                _PlannedRecording(
                    name=f"{patient_id}_{recording_index}b1_{location}_{mode}_{device}",
                    patient_id=patient_id,
                    split="train" if patient_id in train_patients else "test",
                    device=device,
                    sample_rate_hz=rate,
                    subtype=SUBTYPES[int(subtypes[len(plans)])],
                    duration_seconds=0.0,
                    cycles=[],
                )
            )

    _plan_cycles(rng, plans)
    return sorted(plans, key=lambda plan: plan.name)


def _plan_cycles(rng: np.random.Generator, plans: list[_PlannedRecording]) -> None:
    """Cycle times and labels of every plan, in place; every class occurs in each non-empty
    split."""
    for split in SPLITS:
        members = [plan for plan in plans if plan.split == split]
        if not members:
            continue
        num_cycles = [int(rng.integers(3, 7)) for _ in members]
        if sum(num_cycles) < len(CLASS_NAMES):  # room for all four classes in every split
            num_cycles[0] = 6
        labels = [
            int(rng.choice(len(CLASS_NAMES), p=CLASS_PROBABILITIES)) for _ in range(sum(num_cycles))
        ]
        _ensure_every_class(rng, labels)
        position = 0
        for plan, count in zip(members, num_cycles, strict=True):
            plan.duration_seconds, times = _plan_cycle_times(rng, count)
            plan.cycles = [
                (start, end, labels[position + i]) for i, (start, end) in enumerate(times)
            ]
            position += count


# ---------------------------------------------------------------------------------------------
# Files


def _write_wav_atomic(path: Path, audio: np.ndarray, rate: int, subtype: str) -> None:
    with atomic_destination(path) as tmp_path:
        soundfile.write(tmp_path, audio, rate, subtype=subtype, format="WAV")


def _own_files(out_dir: Path) -> set[str]:
    marker = out_dir / MARKER_FILE_NAME
    if not marker.is_file():
        return set()
    try:
        listed = json.loads(marker.read_text(encoding="utf-8")).get("files", [])
    except (ValueError, AttributeError):
        return set()
    return {name for name in listed if isinstance(name, str) and "/" not in name} | {
        MARKER_FILE_NAME
    }


def _prepare_out_dir(out_dir: Path, planned: set[str], overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"synthetic data output is not a folder: {out_dir}")
    existing = {entry.name for entry in out_dir.iterdir()} if out_dir.exists() else set()
    if not existing:
        out_dir.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise FileExistsError(
            f"{out_dir} is not empty; choose an empty folder, or pass --overwrite to replace a "
            "synthetic dataset written there before"
        )
    own = _own_files(out_dir)
    foreign = sorted((planned | {MARKER_FILE_NAME}) & (existing - own))
    if foreign:
        raise FileExistsError(
            f"{out_dir / foreign[0]} was not written by `lungsrad data synth`; refusing to "
            "replace it (choose an empty folder)"
        )
    for name in sorted((own & existing) - planned - {MARKER_FILE_NAME}):
        (out_dir / name).unlink()


def _checked_arguments(
    num_recordings: int | None, *, seed: int, layout: list[SyntheticRecordingSpec] | None
) -> int:
    """The number of recordings to write (`layout`'s length when given); UserError when an
    argument is bad."""
    if layout is not None:
        _check_layout(layout)
        if num_recordings is not None and num_recordings != len(layout):
            raise UserError(f"num_recordings {num_recordings} != {len(layout)} layout entries")
        num_recordings = len(layout)
    if (
        isinstance(num_recordings, bool)
        or not isinstance(num_recordings, int)
        or num_recordings < 2
    ):
        raise UserError(f"--recordings must be an integer >= 2, got {num_recordings!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"--seed must be an integer >= 0, got {seed!r}")
    return num_recordings


def write_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_recordings: int | None = None,
    seed: int,
    overwrite: bool = False,
    layout: Sequence[SyntheticRecordingSpec] | None = None,
) -> SyntheticSummary:
    """Writes a synthetic dataset in the ICBHI_final_database layout.

    NAME.wav + NAME.txt per recording (NAME = patient_index_location_mode_device), the split file
    ICBHI_challenge_train_test.txt (patient-disjoint, about 60 % of patients in train) and
    ICBHI_Challenge_diagnosis.txt. Sample rates 4/10/44.1 kHz and 16/24-bit PCM are mixed; each
    recording is 10-20 s with 3-6 cycles of 1-6 s; every class occurs in train and in test.
    The same seed writes byte-identical files.

    Args:
        out_dir: output folder (created). Must be empty unless `overwrite`.
        num_recordings: recordings to write (>= 2); None with `layout`.
        seed: random seed (>= 0).
        overwrite: replace the files of an earlier synthetic dataset in out_dir (never others).
        layout: instead of `num_recordings`, one spec per recording choosing its patient,
            device (any of the four ICBHI devices) and official split; a patient may appear on
            both sides, as 156 and 218 do in ICBHI.

    Raises:
        UserError: bad num_recordings or seed.
        FileExistsError: out_dir holds files and `overwrite` is off, or a file to write exists
            and was not written by this generator.
    """
    layout = list(layout) if layout is not None else None
    num_recordings = _checked_arguments(num_recordings, seed=seed, layout=layout)
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    plans = _plan(rng, num_recordings) if layout is None else _plan_layout(rng, layout)
    planned = {f"{plan.name}{suffix}" for plan in plans for suffix in (".wav", ".txt")}
    planned |= {SPLIT_FILE_NAME, DIAGNOSIS_FILE_NAME}
    _prepare_out_dir(out_dir, planned, overwrite)

    for index, plan in enumerate(plans):
        # One generator per recording, so its audio does not depend on how others were drawn.
        audio_rng = np.random.default_rng([seed, index])
        audio = synthesize_recording(
            audio_rng,
            sample_rate_hz=plan.sample_rate_hz,
            duration_seconds=plan.duration_seconds,
            cycles=plan.cycles,
        )
        _write_wav_atomic(out_dir / f"{plan.name}.wav", audio, plan.sample_rate_hz, plan.subtype)
        lines = [
            f"{start:.3f}\t{end:.3f}\t{int(label in (1, 3))}\t{int(label in (2, 3))}\n"
            for start, end, label in plan.cycles
        ]
        write_text_atomic(out_dir / f"{plan.name}.txt", "".join(lines))
    write_text_atomic(
        out_dir / SPLIT_FILE_NAME, "".join(f"{plan.name}\t{plan.split}\n" for plan in plans)
    )
    diagnosis_rng = np.random.default_rng([seed, 1])
    patients = sorted({plan.patient_id for plan in plans}, key=int)
    write_text_atomic(
        out_dir / DIAGNOSIS_FILE_NAME,
        "".join(
            f"{patient}\t{DIAGNOSES[int(diagnosis_rng.integers(len(DIAGNOSES)))]}\n"
            for patient in patients
        ),
    )
    marker = {
        "generator": "lungsrad data synth",
        "seed": seed,
        "num_recordings": num_recordings,
        "files": sorted(planned),
    }
    write_text_atomic(out_dir / MARKER_FILE_NAME, json.dumps(marker, indent=1) + "\n")
    return _summary(out_dir, seed, plans)


def _summary(out_dir: Path, seed: int, plans: list[_PlannedRecording]) -> SyntheticSummary:
    cycles = {split: dict.fromkeys(CLASS_NAMES, 0) for split in SPLITS}
    for plan in plans:
        for _, _, label in plan.cycles:
            cycles[plan.split][CLASS_NAMES[label]] += 1
    return SyntheticSummary(
        out_dir=out_dir,
        seed=seed,
        num_recordings=len(plans),
        patients={s: len({p.patient_id for p in plans if p.split == s}) for s in SPLITS},
        recordings={s: sum(p.split == s for p in plans) for s in SPLITS},
        cycles=cycles,
        sample_rates_hz=dict(sorted(Counter(p.sample_rate_hz for p in plans).items())),
        subtypes=dict(sorted(Counter(p.subtype for p in plans).items())),
    )
