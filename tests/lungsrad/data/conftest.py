"""Fixtures for the data tests: hand-made datasets with known content (the synthetic one is
tests/conftest.py `synthetic_root`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lungsrad.config import DataConfig
from lungsrad.data.layout import DIAGNOSIS_FILE_NAME, SPLIT_FILE_NAME


def write_wav(
    path: Path,
    *,
    seconds: float = 3.0,
    rate: int = 4000,
    subtype: str = "PCM_16",
    channels: int = 1,
    samples: np.ndarray | None = None,
) -> np.ndarray:
    """Writes a wav (a 440 Hz tone unless `samples` is given) and returns what was written."""
    if samples is None:
        t = np.arange(int(round(seconds * rate))) / rate
        samples = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
        if channels > 1:
            samples = np.stack([samples] * channels, axis=1)
    soundfile.write(str(path), samples, rate, subtype=subtype, format="WAV")
    return samples


def write_dataset(
    root: Path,
    recordings: dict[str, tuple[str, str]],
    *,
    split_lines: list[str] | None = None,
    newline: str = "\n",
    seconds: float = 3.0,
    rate: int = 4000,
) -> Path:
    """Writes NAME.wav + NAME.txt per recording ({name: (split, annotation text)}) + split file."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (_, annotation) in recordings.items():
        write_wav(root / f"{name}.wav", seconds=seconds, rate=rate)
        (root / f"{name}.txt").write_text(annotation, encoding="utf-8", newline="")
    if split_lines is None:
        split_lines = [f"{name}\t{split}" for name, (split, _) in recordings.items()]
    (root / SPLIT_FILE_NAME).write_bytes(
        "".join(line + newline for line in split_lines).encode("utf-8")
    )
    (root / DIAGNOSIS_FILE_NAME).write_text("101\tCOPD\n102\tURTI\n", encoding="utf-8")
    return root


# Two patients, one per split; every label occurs; tabs in one file, spaces in the other.
SMALL_RECORDINGS = {
    "101_1b1_Al_sc_Meditron": ("train", "0.1\t1.1\t0\t0\n1.2\t2.0\t1\t0\n"),
    "102_1b1_Ar_sc_Meditron": ("test", "0.0 1.0 0 1\n1.5   2.9  1 1\n"),
}


@pytest.fixture
def make_wav() -> Callable[..., np.ndarray]:
    """write_wav(path, *, seconds, rate, subtype, channels, samples) -> samples written."""
    return write_wav


@pytest.fixture
def make_dataset() -> Callable[..., Path]:
    """write_dataset(root, {name: (split, annotation text)}, *, split_lines, newline, ...)."""
    return write_dataset


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """A hand-made 2-recording dataset (4 kHz, 3 s each) in tmp_path/data."""
    return write_dataset(tmp_path / "data", SMALL_RECORDINGS)


@pytest.fixture
def data_config(tmp_path: Path) -> DataConfig:
    """Default preprocessing with the cache in tmp_path (never ~/.cache)."""
    return DataConfig(cache_dir=str(tmp_path / "cache"))
