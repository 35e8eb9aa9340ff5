"""Every bad-input case: the strict loaders raise one line naming the culprit, `inspect_dataset`
lists it as a problem (file and line) and marks the data unusable."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from lungsrad.config import DataConfig
from lungsrad.data.features import build_feature_set
from lungsrad.data.icbhi import load_icbhi_index
from lungsrad.data.inspect import inspect_dataset
from lungsrad.data.layout import SPLIT_FILE_NAME

TRAIN = "101_1b1_Al_sc_Meditron"
TEST = "102_1b1_Ar_sc_Meditron"


def _append_annotation(line: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        with open(root / f"{TRAIN}.txt", "a", encoding="utf-8") as stream:
            stream.write(line)

    return mutate


def _corrupt_wav(root: Path) -> None:
    (root / f"{TEST}.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk")


def _stereo_wav(root: Path) -> None:
    samples = np.zeros((12000, 2), dtype=np.float32)
    soundfile.write(str(root / f"{TEST}.wav"), samples, 4000, subtype="PCM_16")


def _nan_wav(root: Path) -> None:
    samples = np.full(12000, 0.1, dtype=np.float32)
    samples[5000:5010] = np.nan
    soundfile.write(str(root / f"{TEST}.wav"), samples, 4000, subtype="FLOAT")


def _split_entry_without_files(root: Path) -> None:
    with open(root / SPLIT_FILE_NAME, "a", encoding="utf-8") as stream:
        stream.write("103_1b1_Tc_sc_Meditron\ttest\n")


def _recording_missing_from_split(root: Path) -> None:
    (root / SPLIT_FILE_NAME).write_text(f"{TRAIN}\ttrain\n", encoding="utf-8")


def _missing_wav(root: Path) -> None:
    (root / f"{TEST}.wav").unlink()


# (case id, mutation of the small dataset, file the message names, message pattern)
CASES = [
    ("corrupt wav", _corrupt_wav, f"{TEST}.wav", r"unreadable wav"),
    ("stereo wav", _stereo_wav, f"{TEST}.wav", r"has 2 channels but ICBHI recordings are mono"),
    ("zero-length cycle", _append_annotation("2.0\t2.0\t0\t0\n"), f"{TRAIN}.txt:3", "zero-length"),
    ("reversed times", _append_annotation("2.5\t2.1\t0\t0\n"), f"{TRAIN}.txt:3", "reversed cycle"),
    ("three fields", _append_annotation("2.1\t2.5\t0\n"), f"{TRAIN}.txt:3", "expected 4 fields"),
    ("bad flag", _append_annotation("2.1\t2.5\t0\t2\n"), f"{TRAIN}.txt:3", "must be 0 or 1"),
    ("not a number", _append_annotation("2.1\tx\t0\t0\n"), f"{TRAIN}.txt:3", "must be numbers"),
    ("cycle past end", _append_annotation("2.1\t3.5\t0\t0\n"), f"{TRAIN}.txt:3", "past the rec"),
    ("cycle after end", _append_annotation("3.2\t3.4\t0\t0\n"), f"{TRAIN}.txt:3", "after the rec"),
    ("entry without files", _split_entry_without_files, f"{SPLIT_FILE_NAME}:3", "without files"),
    ("missing from split", _recording_missing_from_split, f"{TEST}.wav", "missing from the split"),
    ("missing wav", _missing_wav, f"{TEST}.wav", "wav file missing"),
]


@pytest.mark.parametrize(
    ("mutate", "where", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_strict_loading_raises_one_line_and_inspect_lists_it(
    small_dataset: Path, mutate: Callable[[Path], None], where: str, message: str
) -> None:
    mutate(small_dataset)
    with pytest.raises((ValueError, FileNotFoundError)) as raised:
        load_icbhi_index(small_dataset)
    text = str(raised.value)
    assert "\n" not in text
    assert where in text and _matches(message, text)
    assert "lungsrad data inspect" in text

    report = inspect_dataset(small_dataset)
    assert not report.is_usable
    assert any(where in str(p) and _matches(message, p.message) for p in report.problems), [
        str(p) for p in report.problems
    ]


def _matches(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


def test_nan_samples_fail_the_build_and_inspect(small_dataset: Path, tmp_path: Path) -> None:
    _nan_wav(small_dataset)
    report = inspect_dataset(small_dataset)
    assert [str(p) for p in report.problems] == [
        f"{small_dataset / TEST}.wav: holds NaN or infinite samples (first at sample 5000); "
        "re-export the recording"
    ]
    config = DataConfig(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=f"{TEST}.wav: holds NaN or infinite samples"):
        build_feature_set(config, small_dataset, show_progress=False)
    assert not any((tmp_path / "cache").glob("*"))  # nothing half-written


def test_first_culprit_is_named_and_the_rest_counted(small_dataset: Path) -> None:
    _append_annotation("2.0\t2.0\t0\t0\n2.5\t2.1\t0\t0\n")(small_dataset)
    with pytest.raises(ValueError, match=r"Meditron.txt:3: zero-length .*\(and 1 more problem\)"):
        load_icbhi_index(small_dataset)
    assert len(inspect_dataset(small_dataset).problems) == 2


def test_empty_folder_and_wrong_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for call in (load_icbhi_index, inspect_dataset):
        with pytest.raises(ValueError, match="no recordings in .*empty: expected NAME.wav"):
            call(tmp_path / "empty")
        with pytest.raises(FileNotFoundError, match="dataset folder not found: .*nowhere"):
            call(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no dataset folder: set data.root"):
        build_feature_set(DataConfig(cache_dir=str(tmp_path / "cache")), show_progress=False)


def test_nested_database_folder_is_suggested(small_dataset: Path) -> None:
    with pytest.raises(ValueError, match=r"did you mean .*data\?"):
        load_icbhi_index(small_dataset.parent)


def test_small_overshoot_is_clipped_not_a_problem(small_dataset: Path) -> None:
    _append_annotation("2.1\t3.04\t0\t0\n")(small_dataset)  # 40 ms past the 3 s file
    report = inspect_dataset(small_dataset)
    assert report.is_usable
    assert any("clipped" in note for note in report.notes)
    assert sum(len(r.cycles) for r in load_icbhi_index(small_dataset)) == 5
