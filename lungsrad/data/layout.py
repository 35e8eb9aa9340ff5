"""File names and naming rules of the ICBHI_final_database folder (Rocha et al., 2019).

Kept free of torch so that writing synthetic data does not pay torch's import time.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

SPLIT_FILE_NAME = "ICBHI_challenge_train_test.txt"
DIAGNOSIS_FILE_NAME = "ICBHI_Challenge_diagnosis.txt"
SPLITS: tuple[str, ...] = ("train", "test")

# The official split file lists 226_1b1_Pl_sc_Meditron, but the database ships that recording as
# 226_1b1_Pl_sc_LittC2SE; the entry is moved only when the listed name has no files.
SPLIT_NAME_FIXES: dict[str, str] = {"226_1b1_Pl_sc_Meditron": "226_1b1_Pl_sc_LittC2SE"}

# Recording names: patient_recordingindex_chestlocation_acquisitionmode_device.
RECORDING_NAME_PATTERN = re.compile(r"^\d+_[^_\s]+_[^_\s]+_[^_\s]+_[^_\s]+$")

# Recording devices (stethoscopes), the last field of a recording name; the scores of the four
# differ widely, so every evaluation also reports them per device.
DEVICES: tuple[str, ...] = ("AKGC417L", "LittC2SE", "Litt3200", "Meditron")


def device_of(name: str) -> str:
    """Recording device = last `_` field of the name (101_1b1_Al_sc_Meditron -> Meditron)."""
    return name.rsplit("_", 1)[-1]


def archive_hint(path: Path) -> str:
    """For a dataset path that is a file: what to do when it is the downloaded archive."""
    if path.suffix.lower() != ".zip" and not zipfile.is_zipfile(path):
        return ""
    return (
        f": it is a zip archive; unzip it (unzip {path.name}) and pass the folder that holds the "
        ".wav and .txt files (ICBHI_final_database)"
    )
