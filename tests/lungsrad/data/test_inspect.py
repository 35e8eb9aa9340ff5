"""`inspect_dataset`: the summary (splits x classes, rates, durations), JSON shape, warnings."""

from __future__ import annotations

import json
from pathlib import Path

from lungsrad.data.inspect import inspect_dataset
from lungsrad.data.layout import SPLIT_FILE_NAME


def test_summary_of_a_clean_dataset(small_dataset: Path) -> None:
    report = inspect_dataset(small_dataset)
    assert report.is_usable
    data = report.to_dict()
    json.dumps(data)  # JSON-ready
    assert data["splits"] == {
        "train": {"normal": 1, "crackle": 1, "wheeze": 0, "both": 0},
        "test": {"normal": 0, "crackle": 0, "wheeze": 1, "both": 1},
    }
    assert data["problems"] == [] and data["usable"] is True
    assert (data["num_recordings"], data["num_patients"], data["num_cycles"]) == (2, 2, 4)
    assert data["patients"] == {"train": 1, "test": 1}
    assert data["sample_rates_hz"] == {"4000": 2} and data["subtypes"] == {"PCM_16": 2}
    assert data["recording_seconds"]["min"] == data["recording_seconds"]["max"] == 3.0
    assert data["cycle_seconds"]["min"] == 0.8 and data["cycle_seconds"]["max"] == 1.4
    text = report.format_text()
    assert "recordings: 2  patients: 2  cycles: 4" in text
    assert "4000 Hz x2" in text and "usable: yes" in text


def test_problems_in_json_and_text_name_file_and_line(small_dataset: Path) -> None:
    annotation = small_dataset / "101_1b1_Al_sc_Meditron.txt"
    annotation.write_text(annotation.read_text() + "2.1\t2.5\t0\n")
    report = inspect_dataset(small_dataset)
    assert not report.is_usable
    (problem,) = report.to_dict()["problems"]
    assert problem["file"] == str(annotation) and problem["line"] == 3
    assert problem["message"].startswith("expected 4 fields")
    assert f"{annotation}:3: expected 4 fields" in report.format_text()
    assert "usable: NO" in report.format_text()
    # the valid lines still count
    assert report.to_dict()["splits"]["train"] == {
        "normal": 1,
        "crackle": 1,
        "wheeze": 0,
        "both": 0,
    }


def test_missing_split_file_makes_data_unusable(small_dataset: Path) -> None:
    (small_dataset / SPLIT_FILE_NAME).unlink()
    report = inspect_dataset(small_dataset)
    assert not report.is_usable
    assert [p.message.split(";")[0] for p in report.problems] == ["split file not found"]
    assert report.to_dict()["splits"]["unassigned"]["normal"] == 1


def test_patient_in_both_official_splits_is_a_warning(tmp_path: Path, make_dataset) -> None:
    recordings = {
        "101_1b1_Al_sc_Meditron": ("train", "0.1\t1.1\t0\t0\n"),
        "101_2b1_Ar_sc_Meditron": ("test", "0.1\t1.1\t1\t0\n"),
        "102_1b1_Ar_sc_Meditron": ("train", "0.1\t1.1\t1\t0\n"),
    }
    report = inspect_dataset(make_dataset(tmp_path / "data", recordings))
    assert report.is_usable
    assert [w.message for w in report.warnings] == [
        "1 patient(s) appear in both official train and test: 101"
    ]


def test_many_problems_are_capped_in_text_but_not_in_json(small_dataset: Path) -> None:
    annotation = small_dataset / "101_1b1_Al_sc_Meditron.txt"
    annotation.write_text(annotation.read_text() + "oops\n" * 60)
    report = inspect_dataset(small_dataset)
    assert len(report.to_dict()["problems"]) == 60
    assert "and 10 more (use --json for the full list)" in report.format_text()
