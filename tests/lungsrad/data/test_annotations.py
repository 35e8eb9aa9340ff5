"""The ICBHI text files and records: split-file errors name file and line; a problem's text."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungsrad.data.annotations import DataProblem, read_split_file


def test_split_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "split.txt"
    path.write_text("a_1b1_Al_sc_X\ttrain\nb_1b1_Al_sc_X\tvalidation\n")
    with pytest.raises(ValueError, match=r"split.txt:2: expected 'NAME<TAB>train\|test'"):
        read_split_file(path)
    path.write_text("a_1b1_Al_sc_X\ttrain\na_1b1_Al_sc_X\ttest\n")
    with pytest.raises(ValueError, match="split.txt:2: .* listed as test here and as train"):
        read_split_file(path)
    with pytest.raises(FileNotFoundError, match="split file not found"):
        read_split_file(tmp_path / "missing.txt")


def test_problem_text_names_file_and_line() -> None:
    assert str(DataProblem("a.txt", 3, "bad")) == "a.txt:3: bad"
    assert str(DataProblem("a.wav", None, "bad")) == "a.wav: bad"
    assert DataProblem("a.txt", 3, "bad").to_dict() == {
        "file": "a.txt",
        "line": 3,
        "message": "bad",
    }
