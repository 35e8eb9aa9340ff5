"""File names and naming rules of the ICBHI_final_database folder (Rocha et al., 2019).

Kept free of torch so that writing synthetic data does not pay torch's import time.
"""

from __future__ import annotations

import re

SPLIT_FILE_NAME = "ICBHI_challenge_train_test.txt"
DIAGNOSIS_FILE_NAME = "ICBHI_Challenge_diagnosis.txt"
SPLITS: tuple[str, ...] = ("train", "test")

# The official split file lists 226_1b1_Pl_sc_Meditron, but the database ships that recording as
# 226_1b1_Pl_sc_LittC2SE; the entry is moved only when the listed name has no files.
SPLIT_NAME_FIXES: dict[str, str] = {"226_1b1_Pl_sc_Meditron": "226_1b1_Pl_sc_LittC2SE"}

# Recording names: patient_recordingindex_chestlocation_acquisitionmode_device.
RECORDING_NAME_PATTERN = re.compile(r"^\d+_[^_\s]+_[^_\s]+_[^_\s]+_[^_\s]+$")
