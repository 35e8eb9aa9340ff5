"""The ICBHI reader: labels, split file (CRLF, spaces, by path), the 226_1b1 fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungsrad.data.annotations import read_split_file
from lungsrad.data.icbhi import load_icbhi_index, scan_dataset
from lungsrad.data.layout import DIAGNOSIS_FILE_NAME, SPLIT_FILE_NAME


def test_index_holds_labels_patients_splits_and_header_info(small_dataset: Path) -> None:
    recordings = load_icbhi_index(small_dataset)
    assert [r.name for r in recordings] == ["101_1b1_Al_sc_Meditron", "102_1b1_Ar_sc_Meditron"]
    train, test = recordings
    assert (train.patient_id, train.split) == ("101", "train")
    assert (test.patient_id, test.split) == ("102", "test")
    assert [c.label for c in train.cycles] == [0, 1]
    assert [c.label for c in test.cycles] == [2, 3]
    assert [(c.crackle, c.wheeze) for c in test.cycles] == [(False, True), (True, True)]
    assert [(c.start_seconds, c.end_seconds) for c in test.cycles] == [(0.0, 1.0), (1.5, 2.9)]
    assert [(c.index, c.line) for c in train.cycles] == [(0, 1), (1, 2)]
    assert train.wav_path == small_dataset / "101_1b1_Al_sc_Meditron.wav"
    assert train.annotation_path == small_dataset / "101_1b1_Al_sc_Meditron.txt"
    assert (train.sample_rate_hz, train.num_frames, train.duration_seconds) == (4000, 12000, 3.0)


def test_split_file_with_crlf_spaces_and_blank_lines(tmp_path: Path, make_dataset) -> None:
    recordings = {
        "101_1b1_Al_sc_Meditron": ("train", "0.1\t1.1\t0\t0\r\n1.2\t2.0\t1\t0\r\n\r\n"),
        "102_1b1_Ar_sc_Meditron": ("test", "0.0 1.0 0 1\r\n"),
    }
    split_lines = ["101_1b1_Al_sc_Meditron\ttrain", "", "102_1b1_Ar_sc_Meditron   test"]
    root = make_dataset(tmp_path / "data", recordings, split_lines=split_lines, newline="\r\n")
    assert b"\r\n" in (root / SPLIT_FILE_NAME).read_bytes()
    assert read_split_file(root / SPLIT_FILE_NAME) == {
        "101_1b1_Al_sc_Meditron": "train",
        "102_1b1_Ar_sc_Meditron": "test",
    }
    index = load_icbhi_index(root)
    assert [len(r.cycles) for r in index] == [2, 1]
    assert [r.split for r in index] == ["train", "test"]


def test_split_file_may_be_passed_by_path(tmp_path: Path, small_dataset: Path) -> None:
    root = small_dataset
    elsewhere = tmp_path / "official_split.txt"
    (root / SPLIT_FILE_NAME).rename(elsewhere)
    with pytest.raises(FileNotFoundError, match="split file not found.*--split-file"):
        load_icbhi_index(root)
    assert [r.split for r in load_icbhi_index(root, elsewhere)] == ["train", "test"]


def test_known_meditron_entry_maps_to_the_littc2se_files(tmp_path: Path, make_dataset) -> None:
    recordings = {
        "101_1b1_Al_sc_Meditron": ("train", "0.1\t1.1\t0\t0\n"),
        "226_1b1_Pl_sc_LittC2SE": ("train", "0.1\t1.1\t1\t0\n1.2\t2.2\t0\t0\n"),
    }
    split_lines = ["101_1b1_Al_sc_Meditron\ttrain", "226_1b1_Pl_sc_Meditron\ttrain"]
    root = make_dataset(tmp_path / "data", recordings, split_lines=split_lines)
    scan = scan_dataset(root)
    assert scan.problems == []
    assert any("226_1b1_Pl_sc_Meditron mapped to 226_1b1_Pl_sc_LittC2SE" in n for n in scan.notes)
    index = load_icbhi_index(root)
    fixed = next(r for r in index if r.name == "226_1b1_Pl_sc_LittC2SE")
    assert (fixed.split, fixed.patient_id, len(fixed.cycles)) == ("train", "226", 2)
    assert sum(len(r.cycles) for r in index) == 3  # nothing dropped, nothing counted twice


def test_meditron_entry_is_kept_when_its_files_exist(tmp_path: Path, make_dataset) -> None:
    recordings = {"226_1b1_Pl_sc_Meditron": ("test", "0.1\t1.1\t0\t0\n")}
    root = make_dataset(tmp_path / "data", recordings)
    assert [(r.name, r.split) for r in load_icbhi_index(root)] == [
        ("226_1b1_Pl_sc_Meditron", "test")
    ]


def test_only_txt_files_with_a_wav_are_annotations(small_dataset: Path) -> None:
    (small_dataset / "README.txt").write_text("not an annotation\n")
    (small_dataset / "ICBHI_Challenge_demographic_information.txt").write_text("101 70 M\n")
    assert (small_dataset / DIAGNOSIS_FILE_NAME).is_file()
    scan = scan_dataset(small_dataset)
    assert scan.problems == []
    assert [r.name for r in scan.recordings] == [
        "101_1b1_Al_sc_Meditron",
        "102_1b1_Ar_sc_Meditron",
    ]
